"""REC with detector proposals: the three *_dets_rec experiments on RefCOCO-format fixtures of sandbox scenes with
ReCLIP-format detections (each object's box, shifted, plus a false positive), then rec_dets_table with the
published detector-proposal numbers as labelled reference rows."""
import json

import pandas as pd
import pytest

from falip.cli import compose
from falip.experiments.runner import run_experiment
from falip.sandbox.datasets import write_shapes_rec

DATASETS = {"refcoco": ("refcoco", "unc", {"val": 3, "testA": 2, "testB": 4}),
            "refcocop": ("refcoco+", "unc", {"val": 3, "testA": 2, "testB": 4}),
            "refcocog": ("refcocog", "umd", {"val": 3, "test": 2})}


def write_detections(root, folder, path):
    """ReCLIP's dets_dict: image_id -> [[x, y, w, h], ...]: every object's box shifted by 1 px, and a false box."""
    instances = json.loads((root / folder / "instances.json").read_text())
    detections = {}
    for annotation in instances["annotations"]:
        x, y, w, h = annotation["bbox"]
        detections.setdefault(str(annotation["image_id"]), []).append([x + 1, y + 1, w, h])
    for boxes in detections.values():
        boxes.append([0.0, 0.0, 10.0, 10.0])
    path.write_text(json.dumps(detections))
    return path


@pytest.mark.slow
def test_detector_proposal_runs_and_their_table_with_reference_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FALIP_CACHE", str(tmp_path / "cache"))
    data, out = tmp_path / "data", tmp_path / "out"
    for experiment, (folder, split_by, splits) in DATASETS.items():
        write_shapes_rec(data, seed=len(experiment), scenes_per_split=6, width=96, height=80, splits=splits,
                         dataset_dir=folder, split_by=split_by, file_pattern="COCO_train2014_{:012d}.jpg")
        dets = write_detections(data, folder, tmp_path / f"{folder}_dets_dict.json")
        record = run_experiment(compose([f"experiment={experiment}_dets_rec", "model=sandbox", f"dataset.root={data}",
                                         f"dataset.detections={dets}", "run.progress=false",
                                         f"run.output_dir={out}"]))
        details = next(iter(record.splits.values()))
        assert details["candidate_setting"] == "detections", details
    run_experiment(compose(["experiment=rec_dets_table", f"run.output_dir={out}"]))
    table = pd.read_csv(out / "rec_dets_table.csv", index_col=0)
    assert list(table.columns)[2:] == ["RefCOCO Val", "RefCOCO TestA", "RefCOCO TestB", "RefCOCO+ Val",
                                       "RefCOCO+ TestA", "RefCOCO+ TestB", "RefCOCOg Val", "RefCOCOg Test"]
    measured = table[table["source"] == "measured"]
    assert (measured.loc["FALIP"].iloc[2:] > measured.loc["Original CLIP"].iloc[2:]).all(), measured
    reference = table[table["source"] == "reference (not measured here)"]
    assert reference.loc["Alpha-CLIP (ViT-B/16 + ViT-L/14; ReCLIP parse) [reference]", "RefCOCO Val"] == 55.7
    assert reference.loc["FGVP (ViT-L/14@336 + RN50x16 ensemble; RS) [reference]", "RefCOCOg Val"] == 63.3
    assert pd.isna(reference.loc["FGVP (ViT-L/14@336 + RN50x16 ensemble; RS) [reference]", "RefCOCOg Test"])
    assert not any("[paper]" in row for row in table.index)  # other methods' numbers are never the FALIP paper's
    console = capsys.readouterr()
    assert "not the paper's" not in console.err
    assert "[reference] rows: Published zero-shot REC accuracy % with detector proposals" in console.out


def test_a_dets_experiment_says_it_needs_its_detections():
    from falip.cli import _needs

    assert "dataset.detections=" in _needs(compose(["experiment=refcocog_dets_rec"]))


def test_a_dets_experiment_without_detections_stops_in_one_line(tmp_path):
    from falip.data.registry import check_dataset
    from falip.errors import ConfigError

    with pytest.raises(ConfigError, match="scores detector proposals: set dataset.detections=<ReCLIP's refcoco_dets_dict"):
        check_dataset(compose(["experiment=refcoco_dets_rec", f"dataset.root={tmp_path}"])["dataset"])
