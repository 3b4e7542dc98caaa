"""The box-classification format: round trip, preflight and errors naming the file and field."""
import json

import pytest

from falip.data.classification.boxes import check_box_classification_root, load_box_classification_split
from falip.errors import DatasetError

from conftest import BOX_CLASSES


def test_round_trip_and_errors(box_jsonl_root, tmp_path):
    root = box_jsonl_root
    split = load_box_classification_split(root, "test")
    assert split.classes == BOX_CLASSES and len(split.samples) == 6
    assert split.samples[1].roa.boxes == ((3.0, 3.0, 30.0, 33.0),) and split.samples[1].label == 1
    assert split.samples[0].load_image().size == (44, 36)
    with pytest.raises(DatasetError, match="splits here: \\['test'\\]"):
        load_box_classification_split(root, "val")
    (root / "bad.jsonl").write_text(json.dumps({"file_name": "x.png", "box": [0, 0, 1], "label": 0}) + "\n")
    with pytest.raises(DatasetError, match="bad.jsonl:1: field 'box'"):
        load_box_classification_split(root, "bad")
    (root / "bad.jsonl").write_text(json.dumps({"file_name": "x.png", "box": [0, 0, 1, 1], "label": 7}) + "\n")
    with pytest.raises(DatasetError, match="field 'label' = 7"):
        load_box_classification_split(root, "bad")
    with pytest.raises(DatasetError, match="classes.txt"):
        load_box_classification_split(tmp_path, "test")


def test_preflight_names_the_missing_file(box_jsonl_root, tmp_path):
    check_box_classification_root(box_jsonl_root, ["test"])
    with pytest.raises(DatasetError, match="val.jsonl does not exist"):
        check_box_classification_root(box_jsonl_root, ["test", "val"])
    with pytest.raises(DatasetError, match="does not exist"):
        check_box_classification_root(tmp_path / "nowhere", ["test"])
