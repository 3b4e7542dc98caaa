"""Generated datasets (the sandbox's scenes) written to disk once, in a real on-disk format, and cached.

A dataset config with a ``generator`` section names the writer by its import path (Hydra's
``_target_``, e.g. ``falip.sandbox.datasets.write_shapes_rec``) and its arguments; :func:`materialize`
runs it into a folder keyed by those arguments and fills in ``dataset.root``, after which the data is
read back by the same loader as real data. The runner does not know the sandbox: the config names it.
The folder is written under a fresh temporary name and renamed into place while holding a lock, so an
interrupted build never leaves a half-written dataset behind and two first-time runs (or the ranks of
one ``torchrun``) build it once: the second waits, then reads what the first wrote. A ``dataset.root``
given by the user is never written to: it must already hold the generated data.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from hydra.utils import get_method

from ..errors import ConfigError
from ..io import cache_root, folder_lock

FORMAT_VERSION = 1
MARKER = ".falip-generated.json"


def dataset_key(generator: Mapping[str, Any]) -> str:
    """A short hash of the generator's target and arguments: the cache folder's identity."""
    payload = json.dumps({"format_version": FORMAT_VERSION, **generator}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def build_generated_dataset(generator: Mapping[str, Any], root: str | Path | None = None) -> Path:
    """Run the generator once (``root=None``: a folder under the cache) and return the dataset's root."""
    generator = dict(generator)
    target = generator.pop("_target_", None)
    if not target:
        raise ConfigError("dataset.generator needs _target_: the import path of the function that writes the data")
    try:
        write = get_method(target)
    except Exception as error:  # hydra raises ImportError / ValueError subclasses
        raise ConfigError(f"dataset.generator._target_={target!r} is not an importable function ({error})") from None
    key = dataset_key({"_target_": target, **generator})
    folder = Path(root) if root else cache_root() / f"{target.rsplit('.', 1)[-1].removeprefix('write_')}-{key}"
    if _holds(folder, key):
        return folder
    if folder.exists() and any(folder.iterdir()) and not (folder / MARKER).is_file():
        raise FileExistsError(f"{folder} exists and is not a falip-generated dataset: choose another dataset.root "
                              f"or leave it null to use the cache")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(folder.parent / f".{folder.name}.lock", f"the generated dataset {folder}", wait=True):
        if _holds(folder, key):  # another process built it while this one waited
            return folder
        for stale in folder.parent.glob(f".{folder.name}.tmp-*"):  # left by a build that was killed
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
        try:
            write(tmp, **generator)
            (tmp / MARKER).write_text(json.dumps({"key": key, "_target_": target, "generator": generator,
                                                  "format_version": FORMAT_VERSION}, indent=1))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _holds(folder: Path, key: str) -> bool:
    """Whether ``folder`` holds the finished generated dataset ``key``."""
    marker = folder / MARKER
    try:
        return marker.is_file() and json.loads(marker.read_text()).get("key") == key
    except (json.JSONDecodeError, OSError, AttributeError):
        return False


def materialize(dataset_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset config with ``root`` filled in by its generator, when it has one (cached, seeded)."""
    config = dict(dataset_cfg)
    generator = config.get("generator")
    if generator:
        root = config.get("root")
        if root:  # the user's folder: read, never written
            key = dataset_key(dict(generator))
            if not _holds(Path(root), key):
                raise ConfigError(f"dataset.root={root} does not hold this generated dataset (no {MARKER} with key "
                                  f"{key}): leave dataset.root unset to generate it in the cache ({cache_root()}), "
                                  f"or point it at a folder falip generated with these dataset.generator settings")
        config["root"] = str(build_generated_dataset(generator, root))
    return config
