"""Every input file is untrusted and real datasets have quirks: each case is a clear error, a recorded
skip, or the released code's handling -- never a silent wrong number, a traceback or code run from data."""
import json
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from falip.data.classification.boxes import load_box_classification_split
from falip.data.classification.cub import load_cub_split
from falip.data.classification.imagenet_s import class_names, load_imagenet_s_split, wnids
from falip.data.classification.waterbirds import load_waterbirds_split
from falip.data.images import read_rgb
from falip.data.rec.loading import load_rec_split
from falip.data.rec.refer import read_refs
from falip.data.registry import check_dataset, load_dataset_split
from falip.errors import DatasetError
from falip.sandbox.classification_layouts import write_cub_layout, write_imagenet_s_layout, write_waterbirds_layout
from falip.sandbox.datasets import write_shapes_rec
from falip.tasks.rec import RecTask


@pytest.fixture
def refer(tmp_path):
    write_shapes_rec(tmp_path, seed=5, scenes_per_split=4, width=96, height=80, splits={"val": 3},
                     dataset_dir="refcoco", split_by="unc", file_pattern="COCO_train2014_{:012d}.jpg")
    return tmp_path


def rewrite_instances(root, change):
    path = root / "refcoco" / "instances.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))


class Payload:
    def __reduce__(self):
        import os
        return os.system, ("touch PWNED",)


def test_refs_pickles_are_read_as_plain_data_only(refer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = refer / "refcoco" / "refs(unc).p"
    refs = pickle.loads(path.read_bytes())
    assert read_refs(path) == refs  # plain data: read as before
    path.write_bytes(pickle.dumps([Payload()] + refs, protocol=2))
    with pytest.raises(DatasetError, match=r"references posix\.system|plain data only"):
        read_refs(path)
    assert not (tmp_path / "PWNED").exists()
    for field, value in (("sentences", None), ("raw", None)):
        broken = [dict(ref) for ref in refs]
        if field == "sentences":
            broken[0]["sentences"] = None
        else:
            broken[0]["sentences"] = [{**broken[0]["sentences"][0], "raw": None}]
        path.write_bytes(pickle.dumps(broken, protocol=2))
        with pytest.raises(DatasetError, match=f"ref {refs[0]['ref_id']} has '{field}'"):
            read_refs(path)


def test_instances_files_of_the_wrong_shape_are_one_line_errors(refer):
    rewrite_instances(refer, lambda data: data["images"])
    with pytest.raises(DatasetError, match="top level is a list"):
        load_rec_split("refcoco", "val", root=refer)


def test_an_image_without_file_name_or_leaving_the_root_is_refused(refer):
    original = (refer / "refcoco" / "instances.json").read_text()
    rewrite_instances(refer, lambda data: {**data, "images": [{k: v for k, v in data["images"][0].items()
                                                                 if k != "file_name"}] + data["images"][1:]})
    with pytest.raises(DatasetError, match="lacks 'id' or 'file_name'"):
        load_rec_split("refcoco", "val", root=refer)
    (refer / "refcoco" / "instances.json").write_text(original)
    rewrite_instances(refer, lambda data: {**data, "images": [{**data["images"][0], "file_name": "../../../outside.png"}]
                                           + data["images"][1:]})
    with pytest.raises(DatasetError, match="leaves the image folder"):
        load_rec_split("refcoco", "val", root=refer)


def test_zero_area_candidates_are_dropped_and_counted(refer):
    before = load_rec_split("refcoco", "val", root=refer)

    def flatten(data):  # the first non-target annotation of the first image gets height 0, as COCO ann 2206849
        first = data["images"][0]["id"]
        ann = next(a for a in data["annotations"] if a["image_id"] == first)
        ann["bbox"] = [9.98, 18.56, 5.54, 0]
        return data

    rewrite_instances(refer, flatten)
    split = load_rec_split("refcoco", "val", root=refer)
    assert split.zero_area_candidates == 1 and "zero width or height dropped" in split.notes[-1]
    assert len(split.images[0].candidates) == len(before.images[0].candidates) - 1
    assert split.num_sentences == before.num_sentences  # every sentence is still scored
    assert RecTask().describe(split)["zero_area_candidates_dropped"] == 1


def test_sixteen_bit_grayscale_is_scaled_not_clipped_to_white(tmp_path):
    values = (np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "scan.png")
    assert Image.open(tmp_path / "scan.png").mode.startswith("I")
    rgb = np.asarray(read_rgb(tmp_path / "scan.png"))
    assert rgb.shape == (30, 40, 3) and rgb.min() == 0 and 0 < rgb.mean() < 255
    assert np.array_equal(rgb[..., 0], np.rint(values.astype(np.int64) * 255 / 65535).astype(np.uint8))


def test_a_decompression_bomb_is_an_unreadable_image(tmp_path, monkeypatch):
    Image.new("RGB", (64, 64)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64 x 64 is over twice the limit: PIL refuses it
    with pytest.raises(DatasetError, match="too large to decode safely"):
        read_rgb(tmp_path / "bomb.png")


def test_box_jsonl_labels_must_be_integers(box_jsonl_root):
    path = box_jsonl_root / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["label"] = 2.7
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    with pytest.raises(DatasetError, match=r"test.jsonl:1: .*'label' = 2.7 is not an integer"):
        load_box_classification_split(box_jsonl_root, "test")
    rows[0]["label"] = 2.0
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    assert load_box_classification_split(box_jsonl_root, "test").samples[0].label == 2


def test_duplicate_class_names_are_refused_and_lists_are_accepted(box_jsonl_root, tmp_path):
    config = {"format": "box_jsonl", "name": "boxes", "root": str(box_jsonl_root), "splits": ["test"]}
    named = load_dataset_split({**config, "classnames": ["cat", "dog", "bird"]}, "test")
    assert named.classes == ["cat", "dog", "bird"]
    with pytest.raises(DatasetError, match=r"repeats class names \('cat' at labels \[0, 2\]\)"):
        load_dataset_split({**config, "classnames": ["cat", "dog", "Cat"]}, "test")
    (box_jsonl_root / "classes.txt").write_text("red circle\nblue square\nred circle\n")
    with pytest.raises(DatasetError, match="repeats class names"):
        load_dataset_split(config, "test")
    with pytest.raises(DatasetError, match="dataset.classnames is empty"):
        check_dataset({"format": "modelnet40", "name": "modelnet40", "root": str(tmp_path), "splits": ["test"],
                       "classnames": ""})


def test_imagenet_s_names_default_to_clip_and_wordnet_duplicates_are_refused(tmp_path):
    names = class_names(wnids("919"))
    assert len(set(names)) == 919
    index = wnids("919")
    assert names[index.index("n02012849")] == "crane bird" and names[index.index("n03126707")] == "construction crane"
    wordnet = class_names(wnids("919"), "wordnet")
    assert wordnet.count("crane") == 2
    write_imagenet_s_layout(tmp_path, images=4)
    config = {"format": "imagenet_s", "name": "imagenet_s", "root": str(tmp_path), "variant": "919",
              "splits": ["validation"], "classnames": "wordnet"}
    shutil.copytree(tmp_path / "ImageNetS50", tmp_path / "ImageNetS919")
    real = index[:4]  # give the fixture four real S919 wnids, among them neither crane
    for fake, wnid in zip(sorted(p.name for p in (tmp_path / "ImageNetS919" / "validation").iterdir()), real):
        for part in ("validation", "validation-segmentation"):
            (tmp_path / "ImageNetS919" / part / fake).rename(tmp_path / "ImageNetS919" / part / wnid)
    with pytest.raises(DatasetError, match=r"repeats class names \('crane'"):
        load_dataset_split(config, "validation")
    split = load_dataset_split({**config, "classnames": "clip"}, "validation")
    assert split.classes == names and "CLIP curated" in split.notes[-1]


def test_imagenet_s_masks_of_another_size_are_unusable_samples(tmp_path):
    write_imagenet_s_layout(tmp_path, images=3)
    masks = sorted((tmp_path / "ImageNetS50" / "validation-segmentation").rglob("*.png"))
    with Image.open(masks[0]) as mask:
        mask.resize((mask.width // 2, mask.height // 2), Image.NEAREST).save(masks[0])
    split = load_imagenet_s_split(tmp_path, "validation", "50", categories=tmp_path / "categories.txt")
    bad = [sample for sample in split.samples if sample.problem]
    assert len(bad) == 1 and "48x40 but its image is 96x80" in bad[0].problem
    with pytest.raises(DatasetError, match="wrong place"):
        bad[0].load_image()


def test_relative_paths_of_cub_and_waterbirds_stay_inside_the_root(tmp_path):
    write_cub_layout(tmp_path / "cub", images=4)
    images_txt = tmp_path / "cub" / "CUB_200_2011" / "images.txt"
    lines = images_txt.read_text().splitlines()
    image_id, _ = lines[0].split(maxsplit=1)
    images_txt.write_text("\n".join([f"{image_id} ../../../../outside.jpg"] + lines[1:]) + "\n")
    boxes = tmp_path / "cub" / "CUB_200_2011" / "bounding_boxes.txt"
    assert boxes.is_file()
    with pytest.raises(DatasetError, match="leaves the image folder"):
        for split in ("test", "train"):
            load_cub_split(tmp_path / "cub", split)
    write_waterbirds_layout(tmp_path / "wb", tmp_path / "wbcub", images=6)
    metadata = next((tmp_path / "wb").rglob("metadata.csv"))
    rows = metadata.read_text().splitlines()
    header, first = rows[0].split(","), rows[1].split(",")
    first[header.index("img_filename")] = "/etc/passwd"
    metadata.write_text("\n".join([rows[0], ",".join(first)] + rows[2:]) + "\n")
    split = {"0": "train", "1": "val", "2": "test"}[first[header.index("split")]]
    with pytest.raises(DatasetError, match="absolute path"):
        load_waterbirds_split(tmp_path / "wb", split, tmp_path / "wbcub")


def test_a_sentence_naming_a_missing_annotation_is_a_dataset_error(refer):
    split = load_rec_split("refcoco", "val", root=refer)
    image = split.images[0]
    sentence = image.sentences[0]
    from dataclasses import replace
    with pytest.raises(DatasetError, match="refers to annotation 999999"):
        image.target_boxes(replace(sentence, target_ann_ids=(999999,)))


def test_texts_longer_than_the_context_are_counted(sandbox_clip):
    from falip.encoding.text import TextCache

    texts = TextCache(sandbox_clip)
    long = "a photo of " + "very " * 40 + "red circle"
    texts.embed(["a photo of a red circle", long, long])
    assert texts.truncated == [long] and sandbox_clip.text_context == 16


def test_a_decompression_bomb_becomes_a_skip_reason_not_a_crash(box_jsonl_root, tiny_clip, monkeypatch):
    """In the scoring loop's item preparation the bomb is an unusable item (a recorded skip with
    run.skip_bad_samples=true), like any unreadable image."""
    from falip.encoding.regions import PreparedItems
    from falip.prompts import FALIP

    split = load_box_classification_split(box_jsonl_root, "test")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    prepared = PreparedItems(split.samples, [[s.roa] for s in split.samples], [FALIP], tiny_clip.preprocessor, "squash")
    index, outcome, _ = prepared[0]
    assert index == 0 and isinstance(outcome, str) and "too large to decode safely" in outcome
