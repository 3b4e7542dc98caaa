"""What a result needs to be trusted later: code version, environment, model fingerprint, timings."""
from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..io import configs_dir
from ..version import __version__


def git_state(path: str | Path | None = None) -> dict[str, str | bool | None]:
    """The git commit of the code that ran and whether the tree had uncommitted changes (None outside git)."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip() != ""
        return {"git_sha": sha, "git_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}


_PACKAGE = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=4)
def code_fingerprint(package: Path = _PACKAGE, configs: Path | None = None) -> str:
    """sha256 over the package's source (``falip/**/*.py``) and the experiment configs (``configs/**/*.yaml``,
    hashed as ``configs/<path>`` wherever they lie: top of a checkout or inside a wheel): changes with any
    edit of the code that computes the numbers, committed or not. Computed once per process."""
    configs = (configs_dir() if configs is None else configs).resolve()
    package = package.resolve()
    files = [(path, path.relative_to(package).as_posix()) for pattern in ("*.py", "*.yaml")
             for path in package.rglob(pattern) if not path.is_relative_to(configs)]
    files += [(path, "configs/" + path.relative_to(configs).as_posix()) for pattern in ("*.py", "*.yaml")
              for path in configs.rglob(pattern)]
    digest = hashlib.sha256()
    for path, name in sorted(files, key=lambda pair: pair[1]):
        if "__pycache__" in path.parts:
            continue
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def environment() -> dict[str, str]:
    import transformers

    return {"falip": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "platform": platform.platform(),
            "cpu_threads": str(torch.get_num_threads()),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else "none"}


def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes and bytes, in order): the same weights give the
    same hash whatever file format or folder they were loaded from."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
