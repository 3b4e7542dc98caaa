"""What the wheel ships: every folder of the package and of the top-level configs/ (as falip.configs), and
an installed wheel's falip-run composes its configs from any folder."""
from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tracked(*roots: str) -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *roots], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    return [path for path in listed if (REPO / path).exists() and "__pycache__" not in path]


def _shipped_name(path: str) -> str:
    """The wheel's name of a repository file: configs/x -> falip/configs/x, docs/x -> falip/docs/x."""
    return "falip/" + path if path.startswith(("configs/", "docs/")) else path


def test_every_folder_with_files_is_a_listed_package():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"falip.configs": "configs", "falip.docs": "docs"}
    folders = {".".join(Path(_shipped_name(path)).parent.parts[:depth]) for path in _tracked("falip", "configs", "docs")
               for depth in range(1, len(Path(path).parts) + 1)} - {""}  # with the folders between
    assert folders == set(setuptools["packages"])


@pytest.mark.slow
def test_the_wheel_holds_every_file_and_its_cli_runs_outside_the_checkout(tmp_path):
    """Build the wheel, check it holds every tracked file of falip/ and configs/, install it into a folder of
    its own (no dependencies: the test's environment has them) and compose an experiment from another folder."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("falip-*.whl"))
    names = {name for name in zipfile.ZipFile(wheel).namelist() if not name.startswith("falip-")}
    assert names == {_shipped_name(path) for path in _tracked("falip", "configs", "docs")}
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import falip, falip.cli as cli; from falip.io import configs_dir, docs_dir; print(falip.__file__); "
            "print(configs_dir()); print(cli.compose(['experiment=shapes_rec'])['experiment_name']); print(docs_dir())")
    shown = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True,
                           env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert shown.returncode == 0, shown.stderr
    package, configs, name, docs = shown.stdout.split()
    assert package.startswith(str(site)) and configs == str(site / "falip" / "configs") and name == "shapes_rec"
    assert docs == str(site / "falip" / "docs") and (Path(docs) / "experiments.md").is_file()
