"""ModelNet40 as PointCLIP reads it: ``modelnet40_ply_hdf5_2048`` (HDF5 shards).

::

    modelnet40_ply_hdf5_2048/ply_data_test0.h5, ply_data_test1.h5   data (N, 2048, 3) float32, label (N, 1) uint8
    modelnet40_ply_hdf5_2048/ply_data_train0.h5 ... train4.h5
    modelnet40_ply_hdf5_2048/shape_names.txt                         40 names, line i = label i

``dataset.root`` is that folder or its parent. Splits ``test`` (2,468 shapes: the zero-shot split)
and ``train``: every ``ply_data_<split><k>.h5`` in shard order (the ``*_id2file.json`` files beside
them are not shards). Each shape keeps its first ``dataset.num_points`` points (PointCLIP: 1,024 of
2,048); points are used as stored (the release is unit-sphere normalised).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import DatasetError
from ..folders import first_folder
from .types import PointCloudSplit, read_class_names, read_h5_arrays, samples_from_arrays

FOLDER = "modelnet40_ply_hdf5_2048"
SPLITS = ("test", "train")
HOW_TO_GET = ("Get modelnet40_ply_hdf5_2048.zip (the PointNet release, https://shapenet.cs.stanford.edu/media/"
              "modelnet40_ply_hdf5_2048.zip, or a mirror), unzip it, and set dataset.root to "
              "modelnet40_ply_hdf5_2048/ or its parent.")


def modelnet40_root(root: str | Path) -> Path:
    root = Path(root)
    found = first_folder((root, root / FOLDER), lambda folder: (folder / "shape_names.txt").is_file())
    if found is not None:
        return found
    raise DatasetError(f"dataset.root={root} holds no ModelNet40 (expected {root}/shape_names.txt or "
                       f"{root}/{FOLDER}/shape_names.txt beside ply_data_test*.h5). {HOW_TO_GET}")


def shard_files(folder: Path, split: str) -> list[Path]:
    """``ply_data_<split><k>.h5`` in shard order."""
    if split not in SPLITS:
        raise DatasetError(f"ModelNet40 has no split {split!r}; splits: {list(SPLITS)}")
    pattern = re.compile(rf"ply_data_{split}(\d+)\.h5$")
    shards = sorted((int(m.group(1)), path) for path in folder.iterdir() if (m := pattern.match(path.name)))
    if not shards:
        raise DatasetError(f"{folder} has no ply_data_{split}<k>.h5 shard. {HOW_TO_GET}")
    return [path for _, path in shards]


def check_modelnet40(root: str | Path, splits) -> None:
    folder = modelnet40_root(root)
    for split in splits:
        shard_files(folder, split)


def load_modelnet40_split(root: str | Path, split: str, num_points: int | None = 1024,
                          classes: list[str] | None = None, name: str = "modelnet40") -> PointCloudSplit:
    folder = modelnet40_root(root)
    names = classes or read_class_names(folder / "shape_names.txt")
    samples = []
    for path in shard_files(folder, split):
        arrays = read_h5_arrays(path, ("data", "label"), HOW_TO_GET)
        samples += samples_from_arrays(path, arrays["data"], arrays["label"], num_points, len(names),
                                       prefix=f"{path.stem}/")
    notes = [f"first {num_points} points of each shape"] if num_points else []
    return PointCloudSplit(name, split, [name.replace("_", " ") for name in names], samples, str(folder),
                           notes)


def write_modelnet40(root: str | Path, class_names: list[str], splits: dict[str, tuple[np.ndarray, np.ndarray]],
                     shard_size: int = 2048) -> Path:
    """Write clouds ``(N, P, 3)`` + labels ``(N,)`` per split in the release's layout (shards, ``label``
    as ``(N, 1)`` uint8, ``shape_names.txt``, ``<split>_files.txt``); returns the folder."""
    import h5py

    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shape_names.txt").write_text("".join(f"{name}\n" for name in class_names))
    for split, (clouds, labels) in splits.items():
        listing = []
        for shard, start in enumerate(range(0, max(len(clouds), 1), shard_size)):
            path = folder / f"ply_data_{split}{shard}.h5"
            with h5py.File(path, "w") as handle:
                handle.create_dataset("data", data=np.asarray(clouds[start:start + shard_size], np.float32))
                handle.create_dataset("label", data=np.asarray(labels[start:start + shard_size], np.uint8)[:, None])
            listing.append(f"data/{FOLDER}/{path.name}\n")
        (folder / f"{split}_files.txt").write_text("".join(listing))
    return folder
