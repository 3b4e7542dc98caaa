"""Provenance a reader can trust: the code state is taken before the run writes, runs never touch
committed files, the code's fingerprint follows every edit."""
import subprocess
import tomllib
from pathlib import Path

from falip.experiments import record as record_module
from falip.experiments.provenance import code_fingerprint
from falip.experiments.record import ExperimentRecord

REPO = Path(__file__).resolve().parents[2]


def test_git_state_is_taken_once_before_anything_is_written(tmp_path, tiny_clip, monkeypatch):
    calls = []

    def spy(path=None):
        calls.append(sorted(p.name for p in tmp_path.rglob("*")))
        return {"git_sha": "abc", "git_dirty": False}

    monkeypatch.setattr(record_module, "git_state", spy)
    record = ExperimentRecord("demo", {"run": {}}, tmp_path, ["A"], tiny_clip)
    record.begin()
    record.add_split("val", {"val": {"A": 1.0}}, {})
    record.finish()
    assert calls == [[]], "git state must be read once, before the run's first write"
    assert record.code["git_dirty"] is False and len(record.code["fingerprint"]) == 64


def test_runs_write_where_git_ignores_and_committed_results_live_apart():
    run = "results/runs/shapes_rec/20261205T101010Z-0123abcd"
    written = ["results/shapes_rec.csv", "results/shapes_rec.json", f"{run}/predictions/objects2.jsonl",
               f"{run}/columns/objects2.json", f"{run}/shapes_rec.csv", "results/rec_table.csv"]
    ignored = subprocess.run(["git", "check-ignore", *written], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert ignored == written
    tracked = subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert tracked and all(p.startswith(("results/sandbox/", "results/benchmarks/")) for p in tracked), tracked


def test_code_fingerprint_covers_sources_and_configs(tmp_path):
    """On a copy of the package and its configs (the checkout is never written): the same tree gives the same
    hash, in the checkout's layout or the wheel's (configs inside the package); an edited config or source
    another; a file that is neither code nor config none."""
    import shutil

    copy, configs = tmp_path / "falip", tmp_path / "configs"
    shutil.copytree(REPO / "falip", copy, ignore=shutil.ignore_patterns("__pycache__", "model.safetensors"))
    shutil.copytree(REPO / "configs", configs, ignore=shutil.ignore_patterns("__pycache__"))
    fingerprint = code_fingerprint.__wrapped__  # uncached: every call hashes the files again
    first = fingerprint(copy, configs)
    assert fingerprint(copy, configs) == first == code_fingerprint(REPO / "falip", REPO / "configs")
    wheel = tmp_path / "wheel" / "falip"  # an installed wheel: the configs are the package falip.configs
    shutil.copytree(copy, wheel)
    shutil.copytree(configs, wheel / "configs")
    assert fingerprint(wheel, wheel / "configs") == first
    (copy / "sandbox" / "model" / "notes.txt").write_text("not code")
    assert fingerprint(copy, configs) == first
    (configs / "_probe.yaml").write_text("x: 1\n")
    with_config = fingerprint(copy, configs)
    assert with_config != first
    bias = copy / "model" / "bias.py"
    bias.write_text(bias.read_text() + "\n# edited\n")
    assert fingerprint(copy, configs) not in (first, with_config)


def test_package_metadata_uses_an_spdx_license():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert "*.csv" in project["tool"]["setuptools"]["package-data"]["*"]  # the paper's reference rows ship
