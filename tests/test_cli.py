"""falip-run's user errors: one line (no traceback), naming the field and the fix, before the model loads."""
import os
import subprocess
import sys

import pytest


def falip_run(*overrides, cwd, env=None):
    base = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    env = {**base, "HF_HUB_OFFLINE": "1", "FALIP_CACHE": str(cwd / "cache"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "falip.cli", *overrides, "run.progress=false",
                           f"run.output_dir={cwd}/results"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def one_line_error(done, *fragments):
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "Error executing job" not in done.stderr, done.stderr
    first = done.stderr.strip().splitlines()[0]
    assert first.startswith("falip-run: error: "), done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, (fragment, done.stderr)


@pytest.mark.parametrize("override, fragments", [
    ("run.batch_size=abc", ["run.batch_size='abc'", "an integer >= 1"]),
    ("run.num_workers=-1", ["run.num_workers=-1", ">= 0"]),
    ("run.limit=0", ["run.limit=0"]),
    ("task.iou_threshold=2", ["task.iou_threshold=2"]),
    ("foveal.sigma=0", ["prompt 'FALIP'", "sigma"]),
    ("dataset.splits=[]", ["dataset.splits is empty"]),
])
def test_bad_values_fail_in_one_line_before_the_model_loads(override, fragments, tmp_path):
    # model.path points nowhere: reaching the model would give another error
    done = falip_run(override, f"model.path={tmp_path / 'no-model'}", cwd=tmp_path)
    one_line_error(done, *fragments)
    assert "no-model" not in done.stderr


def test_full_error_env_shows_the_traceback(tmp_path):
    done = falip_run("run.batch_size=abc", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert done.returncode != 0 and "Traceback" in done.stderr and "ConfigError" in done.stderr


def test_an_empty_but_valid_split_fails_before_the_model_loads(refcoco_root, tmp_path):
    done = falip_run("experiment=refcoco_rec", f"dataset.root={refcoco_root}", "dataset.splits=[train]",
                     f"model.path={tmp_path / 'no-model'}", cwd=tmp_path)
    one_line_error(done, "split 'train'", "has no refs", "testA")
    assert "no-model" not in done.stderr


def test_an_empty_model_folder_gets_folder_advice(tmp_path):
    (tmp_path / "empty-model").mkdir()
    done = falip_run(f"model.path={tmp_path / 'empty-model'}", "dataset.generator.scenes_per_split=2", cwd=tmp_path)
    one_line_error(done, "a local directory without CLIP weights", "--local-dir")
    assert f"download {tmp_path / 'empty-model'}" not in done.stderr


def test_list_names_every_experiment_config_with_a_description_and_its_needs():
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-m", "falip.cli", "--list"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    configs = sorted(p.stem for p in (Path(__file__).parents[1] / "configs" / "experiment").glob("*.yaml"))
    listed = [line.strip() for line in done.stdout.splitlines() if line and not line.startswith(" ")][:-1]
    assert listed == configs
    text = done.stdout
    assert "shapes_rec\n    The default, offline experiment" in text
    assert "refcoco_rec\n" in text and "needs: dataset.root=<dir> (docs/datasets.md); the checkpoint " \
                                      "openai/clip-vit-base-patch16" in text
    assert "predict\n    FALIP on your own images" in text and "needs: regions=<file>" in text
    assert all(line.strip() for line in text.splitlines() if line.startswith("    ")), "an empty description"


def test_help_names_the_folder_that_holds_the_docs():
    import re
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-m", "falip.cli", "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = Path(re.search(r"Docs \(installed with falip\): (\S+)/ ", done.stdout).group(1))
    assert (folder / "experiments.md").is_file() and (folder / "guarantees.md").is_file()
    assert "--list" in done.stdout and "predict" in done.stdout
