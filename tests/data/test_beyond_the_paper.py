"""Beyond the paper: COCO and LVIS box classification (the loaders against samples computed by hand from in-format fixtures
(sandbox scenes as COCO 2017 / LVIS v1 files with real JPEGs, crowd and tiny boxes, categories with no box),
and both experiments end to end with the sandbox model), and ImageNet-S with Alpha-CLIP's protocol."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from falip.cli import compose
from falip.data.classification.coco_boxes import load_coco_box_split
from falip.data.registry import check_dataset, load_dataset_split
from falip.errors import DatasetError
from falip.sandbox.classification_layouts import write_coco_layout, write_lvis_layout


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return write_coco_layout(tmp_path_factory.mktemp("coco"), images=20)


@pytest.fixture(scope="module")
def lvis_root(tmp_path_factory):
    return write_lvis_layout(tmp_path_factory.mktemp("lvis"), images=18)


def test_coco_samples_are_every_non_crowd_box_with_its_category(coco_root):
    instances = json.loads((coco_root / "annotations" / "instances_val2017.json").read_text())
    categories = sorted(instances["categories"], key=lambda c: c["id"])
    usable = [a for a in instances["annotations"] if not a["iscrowd"]]
    split = load_coco_box_split(coco_root, "val2017", "coco")
    assert split.classes == [c["name"] for c in categories] and len(split.classes) == 22  # two with no box stay
    assert len(split.samples) == len(usable) and [s.sample_id for s in split.samples] == [str(a["id"]) for a in usable]
    first, annotation = split.samples[0], usable[0]
    x, y, w, h = annotation["bbox"]
    assert first.roa.boxes == ((x, y, x + w, y + h),)
    assert first.label == [c["id"] for c in categories].index(annotation["category_id"])
    image = next(i for i in instances["images"] if i["id"] == annotation["image_id"])
    assert first.image_path == coco_root / "val2017" / image["file_name"] and first.image_path.is_file()
    assert "2 crowd boxes" in split.notes[1] and first.group is None


def test_min_area_excludes_and_counts_tiny_boxes(coco_root):
    everything = load_coco_box_split(coco_root, "val2017", "coco")
    trimmed = load_coco_box_split(coco_root, "val2017", "coco", min_area=16)
    assert len(everything.samples) - len(trimmed.samples) == 2  # images 7 and 14 have a 3 x 3 box
    assert "2 boxes under dataset.min_area=16 px" in trimmed.notes[1]


def test_lvis_reads_coco_urls_synonyms_and_frequency_groups(lvis_root):
    lvis = json.loads((lvis_root / "lvis_v1_val.json").read_text())
    split = load_coco_box_split(lvis_root, "val", "lvis")
    by_id = {c["id"]: c for c in lvis["categories"]}
    ordered = sorted(by_id)
    assert split.classes == [by_id[i]["synonyms"][0].replace("_", " ") for i in ordered]
    assert split.group_names == ["rare", "common", "frequent"] and len(split.samples) == len(lvis["annotations"])
    for sample, annotation in zip(split.samples, lvis["annotations"]):
        category = by_id[annotation["category_id"]]
        assert sample.label == ordered.index(category["id"]) and sample.group == "rcf".index(category["frequency"])
    third = next(s for s, a in zip(split.samples, lvis["annotations"]) if a["image_id"] == 3)
    assert third.image_path == lvis_root / "train2017" / "000000000003.jpg" and third.image_path.is_file()


def test_bad_files_are_one_line_naming_the_file_and_field(tmp_path, coco_root):
    with pytest.raises(DatasetError, match=r"instances_val2017.json not found .*https://cocodataset.org"):
        check_dataset(compose(["experiment=coco_box_cls", f"dataset.root={tmp_path}"])["dataset"])
    instances = json.loads((coco_root / "annotations" / "instances_val2017.json").read_text())
    (tmp_path / "annotations").mkdir()
    broken = {**instances, "annotations": [{**instances["annotations"][0], "category_id": 999}]}
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(broken))
    with pytest.raises(DatasetError, match=r"annotations\[0\] has category_id 999"):
        load_coco_box_split(tmp_path, "val2017", "coco")
    escaping = {**instances, "images": [{**image, "file_name": "../../etc/passwd"} for image in instances["images"]]}
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(escaping))
    with pytest.raises(DatasetError, match="leaves the image folder"):
        load_coco_box_split(tmp_path, "val2017", "coco")


def test_the_registry_passes_the_dataset_section(coco_root):
    config = compose(["experiment=coco_box_cls", f"dataset.root={coco_root}", "dataset.min_area=16",
                      "dataset.classnames=[" + ",".join(f"c{i}" for i in range(22)) + "]"])
    split = load_dataset_split(config["dataset"], "val2017")
    assert split.classes[0] == "c0" and "dataset.min_area=16" in split.notes[1]
    assert config["task"]["templates"] == "openai_imagenet"


@pytest.mark.slow
@pytest.mark.parametrize("experiment, fixture, columns", [
    ("coco_box_cls", "coco_root", ["val2017 accuracy", "val2017 mean_per_class"]),
    ("lvis_box_cls", "lvis_root", ["val accuracy", "val mean_per_class", "val group rare", "val group common",
                                   "val group frequent"])])
def test_box_classification_runs_end_to_end_and_falip_beats_original_clip(tmp_path, request, experiment, fixture,
                                                                          columns):
    root = request.getfixturevalue(fixture)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FALIP_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "falip.cli", f"experiment={experiment}", "model=sandbox",
                           f"dataset.root={root}", "run.progress=false", f"run.output_dir={tmp_path}"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(tmp_path / f"{experiment}.csv", index_col=0)
    assert list(table.columns) == columns
    assert table.loc["FALIP", columns[0]] > table.loc["Original CLIP", columns[0]] + 10, table
    notes = json.loads((tmp_path / f"{experiment}.json").read_text())["columns"]
    assert "excluded" in json.dumps(notes)


def test_alphaclip_names_are_the_first_lemma_with_underscores_and_keep_the_two_cranes():
    from falip.data.classification.imagenet_s import class_names
    from falip.data.classification.types import ClassificationSample, ClassificationSplit
    from falip.data.registry import with_classnames

    names = class_names(["n01484850", "n02012849", "n03126707"], "alphaclip")
    assert names == ["great_white_shark", "crane", "crane"]  # as nltk's synset.lemmas()[0].name() writes them
    split = ClassificationSplit("imagenet_s", "validation", names,
                                [ClassificationSample("a", "x.JPEG", (0.0, 0.0, 1.0, 1.0), 2)], source="test")
    with pytest.raises(DatasetError, match="crane"):
        with_classnames(split, None)  # distinct everywhere, unless a reference protocol says otherwise
    kept = with_classnames(split, None, allow_duplicates=True)
    assert kept.classes == names and "['crane'] name several classes" in kept.notes[-1]


@pytest.mark.slow
def test_the_alphaclip_protocol_runs_and_prints_its_reference_rows_labelled(tmp_path):
    from falip.sandbox.classification_layouts import write_imagenet_s_layout

    root = write_imagenet_s_layout(tmp_path / "ins", images=30, variant="919")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FALIP_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "falip.cli", "experiment=imagenet_s_alphaclip_cls", "model=sandbox",
                           f"dataset.root={root}", f"dataset.categories={root / 'categories.txt'}",
                           f"dataset.classnames={root / 'classnames.txt'}", "run.progress=false",
                           f"run.output_dir={tmp_path / 'out'}"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "reference only, not measured here -- Alpha-CLIP model zoo (SunzeY/AlphaCLIP model-zoo.md" in done.stdout
    assert "Alpha-CLIP ViT-B/16 (trained on GRIT-20M)                               68.89" in done.stdout
    table = pd.read_csv(tmp_path / "out" / "imagenet_s_alphaclip_cls.csv", index_col=0)
    assert list(table.index) == ["Original CLIP", "FALIP", "RedCircle"] and list(table.columns) == ["validation"]
    assert table.loc["FALIP", "validation"] > table.loc["Original CLIP", "validation"]
    config = json.loads((tmp_path / "out" / "imagenet_s_alphaclip_cls.json").read_text())["config"]
    assert config["task"]["templates"] == ["a photo of a {}."] and config["dataset"]["roa"] == "mask"
