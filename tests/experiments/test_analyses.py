"""The analysis experiments offline: attention maps, head sensitivity, sweeps (one run and Hydra multirun
+ collect), and the attention-manipulation / Unleash comparisons, on the sandbox model."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from falip.experiments.record import latest_run_folder
from falip.cli import compose
from falip.experiments.analyses import attention_maps
from falip.experiments.analyses import example_image
from falip.experiments.runner import run_experiment
from falip.model.attention_maps import cls_attention_map
from falip.prompts import FALIP, ORIGINAL_CLIP, RED_CIRCLE


def test_attention_inside_the_roa_rises_under_falip(sandbox_clip, tmp_path):
    image, boxes, _ = example_image(0)
    frame = attention_maps(sandbox_clip, image, boxes, [ORIGINAL_CLIP, RED_CIRCLE, FALIP], tmp_path / "map.png")
    share = dict(zip(frame["prompt"], frame["roa_attention_share"]))
    assert share["FALIP"] > share["Original CLIP"] + 0.2, share
    assert (tmp_path / "map.png").stat().st_size > 10_000 and (tmp_path / "map.csv").is_file()
    rollout = attention_maps(sandbox_clip, image, boxes, [ORIGINAL_CLIP, FALIP], tmp_path / "r.png", layer="rollout")
    assert rollout["roa_attention_share"].iloc[1] > rollout["roa_attention_share"].iloc[0]


def test_attention_maps_are_distributions_over_the_patches(tiny_clip):
    pixels = torch.randn(2, 3, 32, 32)
    for layer in (0, -1, "rollout"):
        grid = cls_attention_map(tiny_clip, pixels, layer=layer)
        assert grid.shape == (2, 4, 4) and (grid >= 0).all() and (grid.sum((1, 2)) <= 1 + 1e-5).all()


@pytest.mark.slow
def test_head_sensitivity_writes_a_layer_by_head_table_and_heatmaps(tmp_path, monkeypatch):
    monkeypatch.setenv("FALIP_CACHE", str(tmp_path / "cache"))
    run_experiment(compose(["experiment=shapes_head_sensitivity", "dataset.generator.scenes_per_split=6",
                            "analysis.max_items=6", "run.progress=false", f"run.output_dir={tmp_path}"]))
    table = pd.read_csv(tmp_path / "shapes_head_sensitivity.csv")
    assert set(table["prompt"]) == {"RedCircle", "FALIP"} and len(table) == 2 * 4 * 4
    assert (table["mean_change"] > 0).all()
    assert (latest_run_folder(tmp_path, "shapes_head_sensitivity") / "shapes_head_sensitivity_FALIP.png").is_file()
    assert (tmp_path / "shapes_head_sensitivity.png").is_file()  # the latest run's figure beside its table


@pytest.mark.slow
def test_sweep_in_one_run_writes_every_point_and_a_plot(tmp_path, monkeypatch):
    monkeypatch.setenv("FALIP_CACHE", str(tmp_path / "cache"))
    run_experiment(compose(["experiment=shapes_sweep", "dataset.generator.scenes_per_split=6", "run.progress=false",
                            f"run.output_dir={tmp_path}"]))
    table = pd.read_csv(tmp_path / "shapes_sweep.csv", index_col=0)
    assert len(table) == 1 + 5 * 3 and "FALIP alpha=8.0 sigma=100.0" in table.index
    assert (tmp_path / "shapes_sweep.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "shapes_sweep.json").read_text())["figure"].endswith("shapes_sweep.png")


@pytest.mark.slow
def test_attention_manipulation_and_unleash_run_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("FALIP_CACHE", str(tmp_path / "cache"))
    for name, rows in (("shapes_attention_manipulation", 7), ("shapes_unleash", 4)):
        run_experiment(compose([f"experiment={name}", "dataset.generator.scenes_per_split=6", "run.progress=false",
                                f"run.output_dir={tmp_path}"]))
        table = pd.read_csv(tmp_path / f"{name}.csv", index_col=0)
        assert len(table) == rows and table.notna().all().all()


@pytest.mark.slow
def test_local_multirun_jobs_write_apart_and_collect_merges_them(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FALIP_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "falip.cli", "-m", "foveal.alpha=4.0,8.0", "dataset.generator.scenes_per_split=4",
               "dataset.splits=[objects3]", "run.progress=false", "hydra.sweep.dir=sweep"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "sweep" / "0" / "shapes_rec.csv").is_file() and (tmp_path / "sweep" / "1" / "shapes_rec.csv").is_file()
    done = subprocess.run([sys.executable, "-m", "falip.cli", "experiment=collect", "sweep_dir=sweep"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    collected = pd.read_csv(tmp_path / "sweep" / "collected.csv")
    assert sorted(collected["foveal.alpha"].unique()) == [4.0, 8.0] and (tmp_path / "sweep" / "collected.png").is_file()
    falip = collected[collected["prompt"] == "FALIP"]
    assert len(falip) == 2 and set(falip["job"].astype(str)) == {"0", "1"}


def test_analyses_steer_with_the_whole_prompt_intervention_included(sandbox_clip):
    """The analyses build a prompt's steering as the scoring loop does: an intervention is not dropped."""
    from falip.experiments.analyses import _prompted
    from falip.model.heads import head_contributions
    from falip.model.interventions import Unleash
    from falip.prompts import FovealBias, VisualPrompt

    image, boxes, _ = example_image(0)
    plain = VisualPrompt("F", bias=FovealBias(layers=(-2, -1)))
    unleashed = VisualPrompt("U", bias=FovealBias(layers=(-2, -1)), intervention=Unleash(layers=(-1,)))
    pixels, steering = _prompted(sandbox_clip, image, boxes, unleashed, "squash")
    assert steering.intervention == Unleash(layers=(-1,)) and steering.roa_tokens is not None
    with_unleash = head_contributions(sandbox_clip, pixels, steering=steering)
    without = head_contributions(sandbox_clip, *(_prompted(sandbox_clip, image, boxes, plain, "squash")[:1]),
                                 steering=_prompted(sandbox_clip, image, boxes, plain, "squash")[1])
    assert torch.allclose(with_unleash[:, :-1], without[:, :-1], atol=1e-6)  # before the Unleash layer: the same
    assert (with_unleash[:, -1] - without[:, -1]).abs().max() > 1e-4  # in it: 2 z' - z moves the heads' terms


@pytest.mark.slow
def test_head_sensitivity_runs_on_point_cloud_items(tmp_path, monkeypatch):
    """An analysis works on any task's items: the sandbox's 3D shapes, rendered to PointCLIP's 6 views."""
    import pandas as pd

    monkeypatch.setenv("FALIP_CACHE", str(tmp_path / "cache"))
    run_experiment(compose(["experiment=shapes_head_sensitivity", "dataset=shapes_3d", "analysis.source=pointcloud",
                            "analysis.source_options={}", "prompts=pointcloud", "analysis.max_items=3", "dataset.splits=[test]",
                            "dataset.generator.shapes_per_class=1", "run.progress=false", f"run.output_dir={tmp_path}"]))
    frame = pd.read_csv(tmp_path / "shapes_head_sensitivity.csv")
    assert set(frame["prompt"]) == {"Original CLIP", "FALIP", "FALIP (foreground tokens)"}
    changes = frame.groupby("prompt")["mean_change"].max()
    assert changes["Original CLIP"] == 0 and changes["FALIP"] > 0  # no prompt: no change; FALIP moves heads


def test_attention_maps_of_a_regions_file_write_a_figure_csv_and_arrays_per_box(tmp_path, sandbox_clip):
    """regions=<file>: every box of every image, the maps as .npz arrays equal to cls_attention_map's."""
    import numpy as np
    from falip.experiments.analyses import _prompted
    from falip.geometry import Region

    image, boxes, _ = example_image(0)
    (tmp_path / "photos").mkdir()
    image.save(tmp_path / "photos" / "a.png")
    image.transpose(0).save(tmp_path / "photos" / "b.png")  # mirrored: another image
    lines = [{"file_name": "a.png", "boxes": [list(boxes[0])]}, {"file_name": "b.png", "boxes": [[2, 2, 40, 30], [10, 8, 60, 50]]}]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    run_experiment(compose(["experiment=attention_maps", f"regions={tmp_path / 'r.jsonl'}",
                            f"image_root={tmp_path / 'photos'}", "run.progress=false", f"run.output_dir={tmp_path / 'out'}"]))
    out = latest_run_folder(tmp_path / "out", "attention_maps")
    assert sorted(p.name for p in out.glob("*.npz")) == ["a_box0.npz", "b_box0.npz", "b_box1.npz"]
    assert all((out / f"{stem}.png").stat().st_size > 10_000 for stem in ("a_box0", "b_box0", "b_box1"))
    summary = pd.read_csv(out / "attention_maps.csv")
    assert len(summary) == 3 * 3 and set(summary["file_name"]) == {"a.png", "b.png"}
    arrays = np.load(out / "a_box0.npz")
    assert set(arrays.files) == {"roa", "layer", "Original CLIP", "RedCircle", "FALIP"}
    grid = sandbox_clip.grid_size
    pixels, steering = _prompted(sandbox_clip, image, [Region((tuple(boxes[0]),))], FALIP, "squash", rows=1)
    expected = cls_attention_map(sandbox_clip, pixels, layer=-1, steering=steering)[0].numpy()
    assert arrays["FALIP"].shape == (grid, grid) and np.allclose(arrays["FALIP"], expected, atol=1e-6)
    share = summary[(summary.file_name == "a.png") & (summary.prompt == "FALIP")]["roa_attention_share"].item()
    assert abs(arrays["FALIP"][arrays["roa"]].sum() - share) < 1e-5


def test_compared_heatmaps_share_one_colour_scale_and_every_figure_reads_back(tmp_path):
    import numpy as np
    from PIL import Image

    from falip.experiments.plots import depth_views_figure, heatmaps_side_by_side

    small, large = np.full((4, 4), 0.5), np.arange(16.0).reshape(4, 4)
    path, scale = heatmaps_side_by_side({"RedCircle": small, "FALIP": large}, tmp_path / "h.png", "t", "change")
    assert scale == (0.0, 15.0)  # the range over both panels, not each its own
    pixels = torch.rand(2, 3, 16, 16)
    from falip.geometry import Region
    depth = depth_views_figure(pixels, [Region(((2, 2, 10, 10),)), None], 8, tmp_path / "d.png")
    for figure in (path, depth):
        image = np.asarray(Image.open(figure).convert("L"), dtype=float)
        assert min(image.shape) > 100 and image.std() > 5, figure  # drawn, not blank


def test_head_sensitivity_figure_records_its_shared_scale(tmp_path, monkeypatch):
    monkeypatch.setenv("FALIP_CACHE", str(tmp_path / "cache"))
    run_experiment(compose(["experiment=shapes_head_sensitivity", "analysis.max_items=2", "run.progress=false",
                            "dataset.generator.scenes_per_split=3", f"run.output_dir={tmp_path}"]))
    sidecar = json.loads((tmp_path / "shapes_head_sensitivity.json").read_text())
    frame = pd.read_csv(tmp_path / "shapes_head_sensitivity.csv")
    means = frame.groupby(["prompt", "layer", "head"])["mean_change"].first()
    assert sidecar["colour_scale"] == pytest.approx([means.min(), means.max()], abs=1e-5)
    assert sidecar["figures"][0].endswith("shapes_head_sensitivity.png") and len(sidecar["figures"]) == 3
