"""falip-run end to end on a RefCOCO-format fixture made of sandbox scenes (the shipped sandbox model)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from falip.experiments.record import latest_run_folder
from falip.sandbox.datasets import write_shapes_rec

from conftest import REFCOCO_SPLITS


def falip_run(*overrides, cwd, check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FALIP_CACHE": str(Path(cwd) / "cache")}
    command = [sys.executable, "-m", "falip.cli", *overrides, "run.progress=false", f"run.output_dir={cwd}/results"]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(done.stdout[-3000:] + done.stderr[-3000:])
    return done


@pytest.mark.slow
def test_refcoco_experiment_end_to_end(refcoco_root, tmp_path):
    falip_run("experiment=refcoco_rec", "model=sandbox", f"dataset.root={refcoco_root}", cwd=tmp_path)
    table = pd.read_csv(tmp_path / "results" / "refcoco_rec.csv", index_col=0)
    assert list(table.columns) == ["val", "testA", "testB"]
    assert list(table.index) == ["Original CLIP", "RedCircle", "RedCircle (+blur, released code)", "Blur", "Crop",
                                 "Grayscale", "FALIP", "RedCircle+FALIP"]
    assert (table.loc["FALIP"] > table.loc["Original CLIP"] + 15).all(), table
    sidecar = json.loads((tmp_path / "results" / "refcoco_rec.json").read_text())
    assert sidecar["status"] == "complete" and sidecar["model"]["source"].endswith("sandbox/model")
    for split, objects in REFCOCO_SPLITS.items():
        column = sidecar["columns"][split]
        assert column["num_images"] == 10 and column["num_sentences"] == 10 * objects
        forwards = column["image_forwards"]
        assert forwards["Original CLIP"] == 10  # one forward per unique image
        assert all(forwards[name] == column["num_candidates"] == 10 * objects for name in forwards if name != "Original CLIP")
    preds = (latest_run_folder(tmp_path / "results", "refcoco_rec") / "predictions" / "testA.jsonl").read_text().splitlines()
    assert len(preds) == 20 and set(json.loads(preds[0])["pred"]) == set(table.index)


@pytest.mark.slow
def test_bad_inputs_through_the_cli(refcoco_root, tmp_path):
    done = falip_run("experiment=refcoco_rec", "model=sandbox", f"dataset.root={refcoco_root}", "dataset.splits=[dev]",
                     cwd=tmp_path, check=False)
    assert done.returncode != 0 and "refcoco has no split 'dev'; valid: ['train', 'val', 'testA', 'testB']" in done.stderr
    broken = tmp_path / "broken"
    write_shapes_rec(broken, seed=6, scenes_per_split=4, width=96, height=80, splits={"val": 2}, dataset_dir="refcoco",
                     split_by="unc", file_pattern="COCO_train2014_{:012d}.jpg")
    images = broken / "images/mscoco/images/train2014"
    (images / "COCO_train2014_000000000002.jpg").unlink()
    (images / "COCO_train2014_000000000003.jpg").write_bytes(b"not a jpeg")
    args = ["experiment=refcoco_rec", "model=sandbox", f"dataset.root={broken}", "dataset.splits=[val]",
            "prompts={FALIP: {bias: '${foveal}'}}"]
    done = falip_run(*args, cwd=tmp_path, check=False)
    assert done.returncode != 0 and "COCO_train2014_000000000002.jpg" in done.stderr and "skip_bad_samples" in done.stderr
    done = falip_run(*args, "run.skip_bad_samples=true", cwd=tmp_path)
    assert "[falip] val: 2 item(s) skipped (4 sentences counted wrong)" in done.stderr
    column = json.loads((tmp_path / "results" / "refcoco_rec.json").read_text())["columns"]["val"]
    assert sorted(s["image_id"] for s in column["skipped"]) == [2, 3]
    assert column["num_skipped_lines"] == 4 and column["num_sentences"] == 8
    assert column["correct"]["FALIP"] <= 4


def test_missing_dataset_is_reported_before_the_model_loads(tmp_path):
    from falip.cli import compose
    from falip.errors import DatasetError
    from falip.experiments.runner import run_experiment

    config = compose(["experiment=refcoco_rec", f"dataset.root={tmp_path / 'nowhere'}", f"model.path={tmp_path / 'no-model'}",
                      f"run.output_dir={tmp_path}"])
    with pytest.raises(DatasetError, match="no refcoco data found"):
        run_experiment(config)
    (tmp_path / "refer" / "refcoco").mkdir(parents=True)
    (tmp_path / "refer" / "refcoco" / "instances.json").write_text("{}")
    config["dataset"]["root"] = str(tmp_path / "refer")
    with pytest.raises(DatasetError, match="image folder .*train2014 does not exist"):
        run_experiment(config)
    config["dataset"]["splits"] = ["val", "dev"]
    with pytest.raises(DatasetError, match="no split 'dev'"):
        run_experiment(config)
