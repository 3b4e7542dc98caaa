"""The point-cloud experiments end to end, offline: sandbox 3D shapes written as ModelNet40 and ScanObjectNN
release files, the shipped sandbox CLIP, then the paper-layout point-cloud table; and the depth-view figure."""
import json

import pandas as pd
import pytest

from falip.experiments.record import latest_run_folder
from falip.cli import compose
from falip.experiments.runner import run_experiment
from falip.sandbox.datasets import write_shapes_3d, write_shapes_3d_scanobjectnn

CHANCE = 100 / 6
ROWS = ["Original CLIP", "FALIP", "FALIP (foreground tokens)"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("pc")
    out = root / "results"
    write_shapes_3d(root / "modelnet", seed=11, shapes_per_class=8, cluttered_fraction=0.5, max_clutter=0.3)
    scan = write_shapes_3d_scanobjectnn(root / "scan", seed=12, shapes_per_class=8, cluttered_fraction=0.5,
                                        max_clutter=0.3, variant="OBJ_BG")
    runs = {"modelnet40_3d": [f"dataset.root={root / 'modelnet'}"],
            "scanobjectnn_3d": [f"dataset.root={scan}", "dataset.variant=OBJ_BG",
                                f"dataset.classnames={scan / 'classnames.txt'}"]}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FALIP_CACHE", str(root / "cache"))
        for experiment, overrides in runs.items():
            run_experiment(compose([f"experiment={experiment}", "model=sandbox", "foveal.alpha=0.5",  # its 3D alpha (shapes_3d)
                                    "run.progress=false", f"run.output_dir={out}", *overrides]))
        run_experiment(compose(["experiment=pc_table", f"run.output_dir={out}"]))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["modelnet40_3d", "scanobjectnn_3d"])
def test_each_experiment_runs_offline_well_above_chance(finished, experiment):
    table = pd.read_csv(finished / f"{experiment}.csv", index_col=0)
    assert list(table.index) == ROWS and list(table.columns) == ["test"]
    # 48 shapes, half cluttered (OBJ_BG: scan background kept); the shipped model scores 64 % on shapes_3d
    assert (table["test"] > CHANCE + 15).all(), table
    sidecar = json.loads((finished / f"{experiment}.json").read_text())
    details = sidecar["columns"]["test"]
    assert sidecar["status"] == "complete" and details["num_shapes"] == 48 and details["num_points"] == 1024
    assert details["image_forwards"] == {row: 48 * 6 for row in ROWS}  # 6 views per shape, one forward each
    assert sidecar["config"]["foveal"]["roa"] == "boxes"


@pytest.mark.slow
def test_pc_table_lays_out_the_paper_table(finished):
    table = pd.read_csv(finished / "pc_table.csv", index_col=0)
    assert list(table.columns[-3:]) == ["ModelNet40", "ScanObjectNN", "Avg"]
    paper = table[table["source"].str.startswith("paper")]
    assert list(paper.index) == ["Original CLIP [paper]", "FALIP [paper]"] and paper.loc["FALIP [paper]", "ModelNet40"] == 18.6
    ours = table.loc["FALIP [ours - paper]"]
    measured = pd.read_csv(finished / "modelnet40_3d.csv", index_col=0).loc["FALIP", "test"]
    assert ours["ModelNet40"] == pytest.approx(measured - 18.6, abs=0.051)  # the table rounds to 0.1


@pytest.mark.slow
def test_depth_views_figure_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("FALIP_CACHE", str(tmp_path / "cache"))
    run_experiment(compose(["experiment=depth_views", "analysis.sample=2", "dataset.generator.shapes_per_class=2",
                            f"run.output_dir={tmp_path}"]))
    figure = latest_run_folder(tmp_path, "depth_views") / "shapes_3d_test_2.png"
    assert figure.stat().st_size > 10_000
    frame = pd.read_csv(latest_run_folder(tmp_path, "depth_views") / "shapes_3d_test_2.csv")
    assert list(frame["view"]) == list(range(6)) and (frame["foreground_pixels"] > 0).any()
