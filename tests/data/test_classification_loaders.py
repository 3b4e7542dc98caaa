"""The classification loaders on fixtures written in each official layout (sandbox scenes), checked
against the fixture's own index files read by hand: label base, box format, split filter, multi-box
ROAs, mask decoding, groups, class names, and errors that name the file."""
import csv
import json

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat

from falip.data.classification.cub import load_cub_split
from falip.data.classification.imagenet_s import decode_mask, load_imagenet_s_split
from falip.data.classification.stanford_dogs import load_stanford_dogs_split
from falip.data.classification.waterbirds import load_waterbirds_split
from falip.data.registry import check_dataset, load_dataset_split
from falip.errors import DatasetError
from falip.sandbox.scenes import CLASS_NAMES


@pytest.fixture(scope="module")
def layouts(classification_layouts):
    return classification_layouts


def table(path):
    return {line.split()[0]: line.split()[1:] for line in path.read_text().splitlines()}


def test_cub_labels_boxes_and_split_by_hand(layouts):
    base = layouts / "cub" / "CUB_200_2011"
    paths, labels = table(base / "images.txt"), table(base / "image_class_labels.txt")
    splits, boxes = table(base / "train_test_split.txt"), table(base / "bounding_boxes.txt")
    test = load_cub_split(layouts / "cub", "test")  # the parent of CUB_200_2011 works too
    expected_ids = [i for i in paths if splits[i] == ["0"]]
    assert [s.sample_id for s in test.samples] == expected_ids and len(expected_ids) < len(paths)
    first = test.samples[0]
    x, y, w, h = (float(v) for v in boxes[first.sample_id])
    assert first.roa.boxes == ((x, y, x + w, y + h),)                 # xywh -> xyxy
    assert first.label == int(labels[first.sample_id][0]) - 1       # 1-based -> 0-based
    assert first.image_path == base / "images" / paths[first.sample_id][0] and first.load_image().size == (96, 80)
    assert test.classes == list(CLASS_NAMES) and len(load_cub_split(base, "train").samples) == len(paths) - len(expected_ids)
    with pytest.raises(DatasetError, match="no split 'val'"):
        load_cub_split(base, "val")


def test_stanford_dogs_mat_lists_and_multi_box_annotations(layouts):
    root = layouts / "dogs"
    listed = loadmat(str(root / "test_list.mat"))
    files = [str(cell[0][0]) for cell in listed["file_list"]]
    split = load_stanford_dogs_split(root, "test")
    assert [s.image_path.relative_to(root / "Images").as_posix() for s in split.samples] == files
    assert [s.label for s in split.samples] == [int(v) - 1 for v in listed["labels"].ravel()]
    assert split.classes == list(CLASS_NAMES)  # folder name after the first '-', '_' -> ' '
    multi = split.samples[0]  # the writer annotates two objects on every 4th image, the first included
    assert len(multi.roa.boxes) == 2 and all(len(s.roa.boxes) == 1 for s in split.samples[1:4])
    with pytest.raises(DatasetError, match="Images not found"):
        load_stanford_dogs_split(layouts / "cub", "train")


def test_imagenet_s_mask_decoding_and_roas(layouts):
    root = layouts / "ins"
    split = load_imagenet_s_split(root, "validation", "50", categories=root / "categories.txt")
    wnids = sorted(root.joinpath("categories.txt").read_text().split())
    sample = next(s for s in split.samples if s.problem is None)
    mask_path = root / "ImageNetS50" / "validation-segmentation" / sample.image_path.parent.name / (sample.image_path.stem + ".png")
    rgb = np.asarray(Image.open(mask_path).convert("RGB")).astype(int)
    ids = rgb[..., 0] + 256 * rgb[..., 1]
    assert np.array_equal(decode_mask(mask_path), ids) and ids[0, 0] == 1000  # ignore border
    assert sample.label == wnids.index(sample.image_path.parent.name)       # id = sorted index + 1
    ys, xs = np.nonzero(ids == sample.label + 1)
    assert sample.roa.boxes == ((xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0),) and sample.roa.mask is None
    assert split.classes == wnids  # no lemma for fixture wnids: the wnid itself
    bad = [s for s in split.samples if s.problem]
    assert len(bad) == 2 and "no pixel of the image's class" in bad[0].problem
    with pytest.raises(DatasetError, match="no pixel"):
        bad[0].load_image()
    masked = load_imagenet_s_split(root, "validation", "50", roa="mask", categories=root / "categories.txt")
    pixels = np.asarray(next(s for s in masked.samples if s.sample_id == sample.sample_id).roa.mask)
    assert np.array_equal(pixels, ids == sample.label + 1)
    with pytest.raises(DatasetError, match="not a class of ImageNet-S50"):
        load_imagenet_s_split(root, "validation", "50")  # the shipped S50 list does not know the fixture's wnids


def test_shipped_imagenet_s_lists_and_names():
    from falip.data.classification.imagenet_s import first_lemmas, wnids

    for variant, count in (("50", 50), ("300", 300), ("919", 919)):
        assert len(wnids(variant)) == count and wnids(variant) == sorted(wnids(variant))
    lemmas = first_lemmas()
    assert lemmas["n01443537"] == "goldfish" and all(w in lemmas for w in wnids("919"))


def test_waterbirds_groups_and_cub_boxes(layouts):
    root = layouts / "wb"
    rows = list(csv.DictReader((root / "waterbird_complete95_forest2water2" / "metadata.csv").open()))
    split = load_waterbirds_split(root, "test", layouts / "wbcub")
    test_rows = [r for r in rows if r["split"] == "2"]
    assert [s.sample_id for s in split.samples] == [r["img_id"] for r in test_rows]
    assert [s.group for s in split.samples] == [2 * int(r["y"]) + int(r["place"]) for r in test_rows]
    assert [s.label for s in split.samples] == [int(r["y"]) for r in test_rows]
    assert split.classes == ["landbird", "waterbird"] and split.group_names[1] == "landbird on water"
    cub_boxes = table(layouts / "wbcub" / "CUB_200_2011" / "bounding_boxes.txt")
    x, y, w, h = (float(v) for v in cub_boxes[split.samples[0].sample_id])
    assert split.samples[0].roa.boxes == ((x, y, x + w, y + h),)
    with pytest.raises(DatasetError, match="dataset.cub_root"):
        load_waterbirds_split(root, "test", None)


def test_registry_classnames_override_and_errors(layouts, tmp_path):
    config = {"format": "waterbirds", "name": "waterbirds", "root": str(layouts / "wb"),
              "cub_root": str(layouts / "wbcub"), "splits": ["test"],
              "classnames": str(layouts / "wb" / "classnames.txt")}
    check_dataset(config)
    split = load_dataset_split(config, "test")
    assert split.classes == ["red circle", "blue square"] and "class names from" in split.notes[-1]
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    with pytest.raises(DatasetError, match="has 3 names, waterbirds has 2 classes"):
        load_dataset_split({**config, "classnames": str(tmp_path / "three.txt")}, "test")
    with pytest.raises(DatasetError, match=r"bounding_boxes.txt not found|holds no CUB"):
        check_dataset({"format": "cub", "name": "cub", "root": str(tmp_path), "splits": ["test"]})
    with pytest.raises(DatasetError, match="Images not found.*ImageNetDogs"):
        check_dataset({"format": "stanford_dogs", "name": "d", "root": str(tmp_path), "splits": ["test"]})
    with pytest.raises(DatasetError, match="dataset.variant"):
        check_dataset({"format": "imagenet_s", "name": "i", "root": str(layouts / "ins"), "variant": 1000,
                       "splits": ["validation"]})


def test_hf_copy_with_named_columns(tmp_path, monkeypatch):
    import datasets

    images = [Image.fromarray(np.full((20, 30, 3), 40 * i, dtype=np.uint8)) for i in range(3)]
    features = datasets.Features({"img": datasets.Image(), "breed": datasets.ClassLabel(names=["a dog", "b dog"]),
                                  "bbox": datasets.Sequence(datasets.Value("float32"))})
    copy = datasets.DatasetDict({"test": datasets.Dataset.from_dict(
        {"img": images, "breed": [0, 1, 1], "bbox": [[1, 2, 10, 8], [0, 0, 5, 5], [3, 3, 4, 4]]}, features=features)})
    copy.save_to_disk(str(tmp_path / "copy"))
    config = {"format": "stanford_dogs", "name": "dogs", "hf_id": str(tmp_path / "copy"), "splits": ["test"],
              "columns": {"image": "img", "label": "breed", "boxes": "bbox", "box_format": "xywh"}}
    check_dataset(config)
    split = load_dataset_split(config, "test")
    assert split.classes == ["a dog", "b dog"] and [s.label for s in split.samples] == [0, 1, 1]
    assert split.samples[0].roa.boxes == ((1.0, 2.0, 11.0, 10.0),) and split.samples[0].load_image().size == (30, 20)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read at import time; CI sets the env first
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with pytest.raises(DatasetError, match="stanford.edu"):
        load_dataset_split({**config, "hf_id": "nobody/not-cached-dogs"}, "test")
