"""Scale-out: torchrun data parallelism (byte-identical to one process, resumable with another process
count), the cluster launcher configs, and the backbone study over checkpoints of other geometries."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from falip.experiments.record import latest_run_folder
from falip.model.bias import roa_cells
from falip.model.random_clip import random_clip, save_random_checkpoint
from falip.prompts import FALIP, ORIGINAL_CLIP, FovealBias
from falip.encoding.regions import encode_regions

SPLITS = "dataset.splits=[objects2,objects3]"


def env(tmp_path):
    return {**os.environ, "HF_HUB_OFFLINE": "1", "FALIP_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def run(tmp_path, out, *extra, processes=1, check=True, wait=True):
    launcher = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--standalone"]
                if processes > 1 else [sys.executable])
    command = [*launcher, "-m", "falip.cli", "dataset.generator.scenes_per_split=30", SPLITS, "run.progress=false",
               f"run.output_dir={out}", *extra]
    if not wait:
        return subprocess.Popen(command, cwd=tmp_path, env=env(tmp_path), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    done = subprocess.run(command, cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(done.stderr[-3000:])
    return done


def outputs(out):
    files = [out / "shapes_rec.csv"] + sorted((latest_run_folder(out, "shapes_rec") / "predictions").glob("*.jsonl"))
    return {path.name: path.read_bytes() for path in files}


@pytest.mark.slow
def test_two_processes_write_the_same_bytes_as_one(tmp_path):
    run(tmp_path, tmp_path / "one")
    run(tmp_path, tmp_path / "two", processes=2)
    assert outputs(tmp_path / "one") == outputs(tmp_path / "two")
    sidecar = json.loads((tmp_path / "two" / "shapes_rec.json").read_text())
    assert sidecar["world_size"] == 2 and sidecar["status"] == "complete"
    ranks = sidecar["columns"]["objects2"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and sum(r["items"] for r in ranks) == 30


@pytest.mark.slow
def test_a_two_process_run_stopped_after_its_first_split_resumes_with_one(tmp_path):
    run(tmp_path, tmp_path / "reference")
    out = tmp_path / "run"
    process = run(tmp_path, out, "run.batch_size=4", "run.name=stopped", processes=2, wait=False)
    folder = out / "runs" / "shapes_rec" / "stopped"
    checkpoint = folder / "columns" / "objects2.json"
    deadline = time.time() + 300
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert checkpoint.exists(), process.communicate()[1][-2000:]
    os.killpg(process.pid, signal.SIGTERM)  # the launcher and both ranks, as a scheduler's time limit would
    process.communicate(timeout=120)
    sidecar = json.loads((folder / "shapes_rec.json").read_text())
    assert sidecar["status"] in ("interrupted", "complete") and "objects2" in sidecar["columns"]
    run(tmp_path, out, "run.resume=true", "run.name=stopped")
    sidecar = json.loads((out / "shapes_rec.json").read_text())
    assert sidecar["status"] == "complete" and sidecar["world_size"] == 1
    assert sidecar["columns"]["objects2"]["resumed"] is True
    assert outputs(out) == outputs(tmp_path / "reference")


def test_launcher_configs_compose_without_a_cluster():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from falip.cli import _register_resolvers

    _register_resolvers()
    with initialize_config_module("falip.configs", version_base="1.3"):
        slurm = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                        return_hydra_config=True)
        local = compose("config", overrides=["hydra/launcher=local"], return_hydra_config=True)
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher") and slurm.hydra.launcher.partition == "gpu"
    assert slurm.hydra.launcher.gpus_per_node == 1 and slurm.hydra.launcher.timeout_min == 240
    assert local.hydra.launcher._target_.endswith("LocalLauncher")
    assert "subdir: ${hydra.job.num}" in OmegaConf.to_yaml(slurm.hydra.sweep)  # every job its own folder


def test_patch_14_at_336_pixels_maps_boxes_to_the_right_tokens():
    model = random_clip("tiny", seed=2, image_size=336, patch_size=14)
    assert model.grid_size == 24 and model.num_tokens == 577
    assert roa_cells((0, 0, 28, 28), 336, 14) == (0, 1, 0, 1)
    assert roa_cells((14.5, 300.0, 40.0, 336.0), 336, 14) == (21, 23, 1, 2)
    from PIL import Image

    image = Image.new("RGB", (672, 336), (90, 90, 90))  # squashed 2:1 -> x halves
    geometry = model.geometry(672, 336)
    assert geometry.box_to_input((56, 28, 112, 84)) == (28.0, 28.0, 56.0, 84.0)
    bias = FALIP.bias.for_model(model).build([geometry.box_to_input((56, 28, 112, 84))], 336, 14)
    tokens = torch.nonzero(bias[0, 0]).flatten().tolist()
    # the released rule: rows max(ceil(28/14),1)-1 .. ceil(84/14)-1, columns likewise (edges on a patch
    # boundary also take the cell they touch); the overlap rule takes only the cells the box covers
    assert tokens == [1 + row * 24 + col for row in range(1, 6) for col in range(1, 4)]
    overlap = FovealBias(alpha=1.0, cell_rule="overlap").build([(28.0, 28.0, 56.0, 84.0)], 336, 14)
    assert torch.nonzero(overlap[0, 0]).flatten().tolist() == [1 + row * 24 + col for row in range(2, 6)
                                                               for col in range(2, 4)]
    assert encode_regions(model, image, [(56, 28, 112, 84)], FALIP).shape == (1, 16)
    assert not torch.allclose(encode_regions(model, image, [(56, 28, 112, 84)], FALIP),
                              encode_regions(model, image, [(56, 28, 112, 84)], ORIGINAL_CLIP))


@pytest.mark.slow
def test_backbone_study_over_checkpoints_of_other_geometries_and_families(tmp_path):
    """One sweep over CLIP checkpoints of two geometries, a SigLIP (attention-pooled) and a MetaCLIP 2 one."""
    checkpoints = {"p8_32px": dict(image_size=32, patch_size=8), "p14_56px": dict(image_size=56, patch_size=14),
                   "siglip_p8": dict(family="siglip"), "metaclip2_p8": dict(family="metaclip_2")}
    paths = [str(save_random_checkpoint(tmp_path / name, "tiny", seed=seed, **dims))
             for seed, (name, dims) in enumerate(checkpoints.items())]
    done = subprocess.run([sys.executable, "-m", "falip.cli", "-m", "experiment=shapes_backbones",
                           f"model.path={','.join(paths)}", "dataset.generator.scenes_per_split=5", "run.progress=false",
                           "hydra.sweep.dir=sweep"], cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    import pandas as pd

    table = pd.read_csv(tmp_path / "sweep" / "backbones.csv", index_col=0)
    labels = [f"{name} [alpha 8.0]" for name in checkpoints]  # the sandbox model config: alpha tuned (for it)
    assert list(table.columns) == labels and "FALIP" in table.index
    models = json.loads((tmp_path / "sweep" / "backbones.json").read_text())["models"]
    assert models[labels[1]]["patch_size"] == 14 and models[labels[1]]["image_size"] == 56
    assert [models[label]["model_type"] for label in labels] == ["clip", "clip", "siglip", "metaclip_2"]
    assert len({models[label]["weights_sha256"] for label in labels}) == 4
