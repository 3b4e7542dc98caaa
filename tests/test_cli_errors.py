"""More of falip-run's user errors, each one line: typos in closed sections (with or without +), a device the
machine lacks, a flat box list, and what a limited run says about itself."""
import json

import pytest

from falip.cli import unknown_key_error

from test_cli import falip_run, one_line_error


@pytest.mark.parametrize("arguments, fragments", [
    (["run.batchsize=4"], ["run.batchsize is not a key", "did you mean run.batch_size?"]),
    (["+run.batchsize=4"], ["run.batchsize is not a key", "did you mean run.batch_size?"]),
    (["++foveal.alhpa=1"], ["foveal.alhpa", "did you mean foveal.alpha?"]),
    (["experiment=shapes_cls,shapes_rec", "+task.templatse=x"], ["task.templatse", "task.templates"]),
    (["~dataset.rot"], ["dataset.rot", "dataset.root"]),
])
def test_unknown_keys_are_refused_with_the_nearest_valid_key(arguments, fragments):
    problem = unknown_key_error(arguments)
    assert problem is not None
    for fragment in fragments:
        assert fragment in problem, problem


def test_valid_keys_pass():
    assert unknown_key_error(["experiment=shapes_cls", "run.batch_size=4", "task.templates=simple",
                              "dataset.classnames=[a,b]", "foveal.alpha=1", "prompts=backbones"]) is None
    assert unknown_key_error(["experiment=stanford_dogs_cls", "dataset.columns.label=y"]) is None  # open mapping


def test_unknown_keys_fail_before_hydra_runs(tmp_path):
    one_line_error(falip_run("+run.batchsize=4", cwd=tmp_path), "did you mean run.batch_size?")


def test_a_missing_cuda_device_and_a_flat_box_list_are_one_line(tmp_path):
    import torch

    if not torch.cuda.is_available():
        one_line_error(falip_run("run.device=cuda", cwd=tmp_path), "run.device=cuda", "no CUDA device")
    one_line_error(falip_run("experiment=attention_maps", f"image={tmp_path / 'x.png'}", "boxes=[0,0,10,10]",
                             cwd=tmp_path), "image=")
    from PIL import Image
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    one_line_error(falip_run("experiment=attention_maps", f"image={tmp_path / 'x.png'}", "boxes=[0,0,10,10]",
                             cwd=tmp_path), "not a list of boxes", "boxes=[[40,60,200,300]]")


@pytest.mark.slow
def test_a_limited_run_says_so_on_the_console_and_in_its_sidecar(tmp_path):
    done = falip_run("run.limit=30", "prompts=backbones", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "run.limit=30: only the first 30 sentences of each split" in done.stderr
    sidecar = json.loads((tmp_path / "results" / "shapes_rec.json").read_text())
    assert sidecar["partial"]["limit"] == 30 and sidecar["texts_truncated"]["count"] == 0
    assert sidecar["columns"]["objects2"]["texts_truncated_to_context"] == 0
