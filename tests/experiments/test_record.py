"""The run record: CSV + sidecar after every split, resume, failure status; paper-layout tables."""
import json

import pandas as pd
import pytest

from falip.experiments.record import ExperimentRecord, config_hash
from falip.experiments.tables import PAPER, accuracy_table, combine_with_paper, paper_table, read_table
from falip.errors import DatasetError
from falip.experiments.reports import build_paper_table

CONFIG = {"experiment_name": "demo", "run": {"seed": 0, "output_dir": "x", "progress": True}, "task": {"name": "rec"}}


def test_record_writes_after_each_split_into_its_run_folder_and_resumes(tmp_path, tiny_clip):
    record = ExperimentRecord("demo", CONFIG, tmp_path, ["A", "B"], tiny_clip)
    folder = record.begin()
    assert folder.parent == tmp_path / "runs" / "demo" and folder.name.endswith(record.hash[:8])
    record.add_split("val", {"val": {"A": 50.0, "B": 75.123}}, {"image_forwards": {"A": 3, "B": 4}})
    table = read_table(folder / "demo.csv")
    assert list(table.columns) == ["val"] and table.loc["B", "val"] == pytest.approx(75.12)
    sidecar = json.loads((folder / "demo.json").read_text())
    assert sidecar["status"] == "running" and sidecar["counts"]["total_image_forwards"] == 7
    assert len(sidecar["model"]["weights_sha256"]) == 64 and sidecar["config"] == CONFIG
    assert "git_sha" in sidecar["code"] and sidecar["environment"]["torch"] and sidecar["run_dir"] == str(folder)
    assert not (tmp_path / "demo.csv").exists()  # the stable table: only a completed run updates it
    record.fail(RuntimeError("boom"))
    assert json.loads((folder / "demo.json").read_text())["status"] == "failed"
    assert not (tmp_path / "demo.json").exists()

    resumed = ExperimentRecord("demo", CONFIG, tmp_path, ["A", "B"], tiny_clip, resume=True)
    assert resumed.begin() == folder  # the latest folder of this config
    assert resumed.cached("val") and not resumed.cached("test")
    assert resumed.columns["val"]["B"] == 75.123
    resumed.finish()
    assert read_table(tmp_path / "demo.csv").equals(read_table(folder / "demo.csv"))
    assert json.loads((tmp_path / "demo.json").read_text())["status"] == "complete"
    changed = {**CONFIG, "task": {"name": "rec", "iou_threshold": 0.7}}
    other = ExperimentRecord("demo", changed, tmp_path, ["A"], tiny_clip, resume=True)
    assert other.begin() != folder and not other.cached("val")  # another config: a folder of its own
    other.release()
    fresh = ExperimentRecord("demo", CONFIG, tmp_path, ["A"], tiny_clip, resume=False)
    assert fresh.begin() != folder and not fresh.cached("val")  # no resume: a new folder
    fresh.release()
    assert len(list((tmp_path / "runs" / "demo").iterdir())) == 3


def test_a_named_run_folder_is_reused_only_for_its_own_config(tmp_path, tiny_clip):
    from falip.errors import ConfigError

    first = ExperimentRecord("demo", CONFIG, tmp_path, ["A"], tiny_clip, run_name="baseline")
    assert first.begin() == tmp_path / "runs" / "demo" / "baseline"
    first.add_split("val", {"val": {"A": 50.0}}, {})
    first.fail(KeyboardInterrupt())
    again = ExperimentRecord("demo", CONFIG, tmp_path, ["A"], tiny_clip, run_name="baseline")
    with pytest.raises(ConfigError, match="unfinished run of this config .* run.resume=true"):
        again.begin()
    again.release()
    changed = {**CONFIG, "task": {"name": "rec", "iou_threshold": 0.7}}
    other = ExperimentRecord("demo", changed, tmp_path, ["A"], tiny_clip, resume=True, run_name="baseline")
    with pytest.raises(ConfigError, match="holds a run of another config"):
        other.begin()
    other.release()
    resumed = ExperimentRecord("demo", CONFIG, tmp_path, ["A"], tiny_clip, resume=True, run_name="baseline")
    resumed.begin()
    assert resumed.cached("val")
    resumed.finish()
    assert json.loads((tmp_path / "demo.json").read_text())["run_dir"] == str(tmp_path / "runs" / "demo" / "baseline")


def test_config_hash_is_what_determines_the_numbers():
    base = {**CONFIG, "model": {"name": "falip-sandbox", "path": "/checkout/a/falip/sandbox/model", "foveal_alpha": 8.0}}
    other = {**base, "run": {**base["run"], "progress": False, "num_workers": 2, "output_dir": "elsewhere"},
             "model": {**base["model"], "path": "/checkout/b/falip/sandbox/model"}}
    assert config_hash(other, "w1", "c1") == config_hash(base, "w1", "c1")  # how it runs, where things lie
    assert config_hash({**base, "run": {**base["run"], "seed": 1}}, "w1", "c1") != config_hash(base, "w1", "c1")
    assert config_hash(base, "w2", "c1") != config_hash(base, "w1", "c1")  # other weights
    assert config_hash(base, "w1", "c2") != config_hash(base, "w1", "c1")  # other code


def test_paper_rows_are_labelled_and_never_mixed(tmp_path):
    measured = accuracy_table({"RefCOCO TestA": {"FALIP": 40.0}, "Avg": {"FALIP": 41.0}}, ["FALIP"])
    paper = paper_table("rec.csv")
    assert paper.loc["FALIP", "RefCOCO TestA"] == 44.2
    combined = combine_with_paper(measured, paper)
    assert combined.loc["FALIP", "source"] == "measured" and combined.loc["FALIP", "RefCOCO TestA"] == 40.0
    assert combined.loc["FALIP [paper]", "source"] == PAPER and combined.loc["FALIP [paper]", "RefCOCO TestA"] == 44.2


def test_rec_table_from_finished_runs(tmp_path):
    for name, columns in {"refcoco_rec": ["val", "testA", "testB"], "refcocop_rec": ["val", "testA", "testB"],
                          "refcocog_rec": ["val", "test"]}.items():
        frame = pd.DataFrame({c: [10.0 + i, 20.0 + i] for i, c in enumerate(columns)}, index=["Original CLIP", "FALIP"])
        frame.index.name = "prompt"
        frame.to_csv(tmp_path / f"{name}.csv")
        (tmp_path / f"{name}.json").write_text(json.dumps({"status": "complete"}))
    config = {"experiment_name": "rec_table", "run": {"output_dir": str(tmp_path)},
              "report": {"name": "table", "average": "Avg", "paper_csv": "rec.csv",
                       "columns": {"RefCOCO TestA": ["refcoco_rec", "testA"], "RefCOCO TestB": ["refcoco_rec", "testB"],
                                   "RefCOCO+ TestA": ["refcocop_rec", "testA"], "RefCOCOg Test": ["refcocog_rec", "test"]}}}
    table = build_paper_table(config)
    assert list(table.columns) == ["source", "model", "RefCOCO TestA", "RefCOCO TestB", "RefCOCO+ TestA", "RefCOCOg Test", "Avg"]
    assert table.loc["FALIP", "Avg"] == pytest.approx((21 + 22 + 21 + 21) / 4)
    assert table.loc["FALIP [paper]", "Avg"] == 45.2
    written = read_table(tmp_path / "rec_table.csv")
    assert written.loc["RedCircle [paper]", "source"] == PAPER
    (tmp_path / "refcocog_rec.csv").unlink()
    with pytest.raises(DatasetError, match="falip-run experiment=refcocog_rec"):
        build_paper_table(config)


def test_rec_table_names_its_models_and_warns_off_the_paper_backbone(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the paper's numbers ship with the package: any working folder will do
    geometry = {"image_size": 224, "patch_size": 16, "vision_layers": 12}
    runs = {"refcoco_rec": ("falip-sandbox", {"image_size": 64, "patch_size": 8, "vision_layers": 4}, "ab" * 32),
            "refcocop_rec": ("openai/clip-vit-base-patch16", geometry, "cd" * 32)}
    for name, (model_name, info, weights) in runs.items():
        frame = pd.DataFrame({"testA": [30.0, 40.0]}, index=["Original CLIP", "FALIP"])
        frame.index.name = "prompt"
        frame.to_csv(tmp_path / f"{name}.csv")
        (tmp_path / f"{name}.json").write_text(json.dumps({"status": "complete", "config": {"model": {"name": model_name}},
                                                           "model": {**info, "weights_sha256": weights}}))
    config = {"experiment_name": "t", "run": {"output_dir": str(tmp_path)},
              "report": {"name": "table", "paper_csv": "rec.csv",
                       "columns": {"RefCOCO TestA": ["refcoco_rec", "testA"], "RefCOCO+ TestA": ["refcocop_rec", "testA"]}}}
    table = build_paper_table(config)
    assert table.loc["FALIP", "model"] == "falip-sandbox [weights abababab] + openai/clip-vit-base-patch16 [weights cdcdcdcd]"
    assert table.loc["FALIP [paper]", "model"] == "openai/clip-vit-base-patch16 (paper)"
    sidecar = json.loads((tmp_path / "t.json").read_text())
    assert len(sidecar["warnings"]) == 1 and "falip-sandbox" in sidecar["warnings"][0]
    assert "warning: RefCOCO TestA (refcoco_rec) was measured with falip-sandbox" in capsys.readouterr().err
    assert set(sidecar) >= {"task", "sources", "paper_reference"} and "config" not in sidecar  # no unrelated defaults


def test_a_paper_table_marks_partial_sources(tmp_path, capsys):
    """A run made with run.limit, an interrupted or failed run, a run whose process died ('running' with a
    gone pid) or a CSV without a sidecar can never pass for the protocol: its column is marked in the CSV,
    the sidecar and on the console."""
    import socket
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    metas = {"a": {"status": "complete"}, "b": {"status": "complete", "partial": {"limit": 30}},
             "c": {"status": "failed"}, "d": {"status": "running", "process": {"host": socket.gethostname(),
                                                                                  "pid": dead.pid}},
             "e": None}
    for name, meta in metas.items():
        frame = pd.DataFrame({"val": [10.0, 20.0]}, index=["Original CLIP", "FALIP"])
        frame.index.name = "prompt"
        frame.to_csv(tmp_path / f"{name}.csv")
        if meta is not None:
            (tmp_path / f"{name}.json").write_text(json.dumps(meta))
    config = {"experiment_name": "t", "run": {"output_dir": str(tmp_path)},
              "report": {"name": "table", "average": "Avg", "columns": {k.upper(): [k, "val"] for k in metas}}}
    table = build_paper_table(config)
    assert list(table.columns) == ["A", "B [PARTIAL: run.limit=30]", "C [PARTIAL: status failed]",
                                   "D [PARTIAL: status interrupted]", "E [PARTIAL: no sidecar (status unknown)]",
                                   "Avg [PARTIAL: averages partial column(s) ['B', 'C', 'D', 'E']]"]
    assert list(read_table(tmp_path / "t.csv").columns) == list(table.columns)
    sidecar = json.loads((tmp_path / "t.json").read_text())
    assert sidecar["sources"]["A"]["partial"] == [] and sidecar["sources"]["B"]["partial"] == ["run.limit=30"]
    assert len(sidecar["warnings"]) == 4
    assert capsys.readouterr().err.count("which is partial") == 4
