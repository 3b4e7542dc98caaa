"""ScanObjectNN in its ``h5_files`` release (real scans: 15 classes).

::

    h5_files/main_split/test_objectdataset_augmentedrot_scale75.h5   PB_T50_RS (the hardest; default)
    h5_files/main_split/test_objectdataset.h5                        OBJ_BG (with background)
    h5_files/main_split_nobg/test_objectdataset.h5                   OBJ_ONLY
    (training_*.h5 beside each; PB_T25, PB_T25_R, PB_T50_R also read)
    each: data (N, 2048, 3) float32, label (N,) int, mask (N, 2048) (-1 = background point; not used)

``dataset.root`` is ``h5_files/`` or its parent; ``dataset.variant`` picks the file, splits are
``test`` (zero-shot) and ``train``. The scans are not unit-normalised: ``dataset.normalize=true``
(default, inferred: the depth-map camera sits 1.6 units away, built for unit-sphere shapes) centres
each shape's bounding box and scales it into the unit sphere. First ``dataset.num_points`` points.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DatasetError
from .types import PointCloudSplit, read_h5_arrays, samples_from_arrays

CLASSES = ("bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed", "pillow",
           "sink", "sofa", "toilet")
VARIANTS = {
    "PB_T50_RS": ("main_split", "objectdataset_augmentedrot_scale75"),
    "OBJ_BG": ("main_split", "objectdataset"),
    "OBJ_ONLY": ("main_split_nobg", "objectdataset"),
    "PB_T25": ("main_split", "objectdataset_augmented25_norot"),
    "PB_T25_R": ("main_split", "objectdataset_augmented25rot"),
    "PB_T50_R": ("main_split", "objectdataset_augmentedrot"),
}
SPLITS = {"test": "test", "train": "training"}
HOW_TO_GET = ("Request ScanObjectNN from https://hkust-vgd.github.io/scanobjectnn/ (form), download h5_files.zip, "
              "unzip it, and set dataset.root to h5_files/ or its parent.")


def scanobjectnn_file(root: str | Path, split: str, variant: str = "PB_T50_RS") -> Path:
    if variant not in VARIANTS:
        raise DatasetError(f"dataset.variant={variant!r} is not a ScanObjectNN variant; variants: {list(VARIANTS)}")
    if split not in SPLITS:
        raise DatasetError(f"ScanObjectNN has no split {split!r}; splits: {list(SPLITS)}")
    folder, stem = VARIANTS[variant]
    root = Path(root)
    for base in (root, root / "h5_files"):
        if (base / folder).is_dir():
            path = base / folder / f"{SPLITS[split]}_{stem}.h5"
            if not path.is_file():
                raise DatasetError(f"{path} not found (ScanObjectNN {variant} {split}). {HOW_TO_GET}")
            return path
    raise DatasetError(f"dataset.root={root} holds no ScanObjectNN (expected {root}/{folder}/ or "
                       f"{root}/h5_files/{folder}/). {HOW_TO_GET}")


def check_scanobjectnn(root: str | Path, splits, variant: str = "PB_T50_RS") -> None:
    for split in splits:
        scanobjectnn_file(root, split, variant)


def normalize_clouds(data: np.ndarray) -> np.ndarray:
    """Centre each shape's bounding box and scale its farthest finite point to radius 1."""
    finite = np.isfinite(data).all(-1, keepdims=True)
    low = np.where(finite, data, np.inf).min(1, keepdims=True)
    high = np.where(finite, data, -np.inf).max(1, keepdims=True)
    centred = data - (low + high) / 2
    radius = np.where(finite[..., 0], np.linalg.norm(np.where(finite, centred, 0), axis=-1), 0).max(1)
    return centred / np.maximum(radius, 1e-12)[:, None, None]


def load_scanobjectnn_split(root: str | Path, split: str, variant: str = "PB_T50_RS", num_points: int | None = 1024,
                            normalize: bool = True, classes: list[str] | None = None,
                            name: str = "scanobjectnn") -> PointCloudSplit:
    path = scanobjectnn_file(root, split, variant)
    arrays = read_h5_arrays(path, ("data", "label"), HOW_TO_GET)
    names = list(classes or CLASSES)
    data = arrays["data"][:, :num_points] if num_points else arrays["data"]
    if normalize and len(data):
        data = normalize_clouds(data.astype(np.float32))
    samples = samples_from_arrays(path, data, arrays["label"], None, len(names), prefix=f"{variant}/{split}/")
    notes = [f"variant {variant}"] + ([f"first {num_points} points of each shape"] if num_points else [])
    notes += ["each shape centred and scaled into the unit sphere (dataset.normalize)"] if normalize else []
    return PointCloudSplit(name, split, names, samples, str(path), notes)


def write_scanobjectnn(root: str | Path, variant: str, splits: dict[str, tuple[np.ndarray, np.ndarray]],
                       background: dict[str, np.ndarray] | None = None) -> Path:
    """Write clouds + labels per split as the release's file of ``variant`` (``label`` (N,), ``mask`` -1 on
    the points ``background[split]`` marks); returns the ``h5_files`` folder."""
    import h5py

    folder, stem = VARIANTS[variant]
    base = Path(root) / "h5_files"
    (base / folder).mkdir(parents=True, exist_ok=True)
    for split, (clouds, labels) in splits.items():
        labels = np.asarray(labels, np.int64)
        mask = np.repeat(labels[:, None], np.shape(clouds)[1], 1).astype(np.int32)
        if background and split in background:
            mask[background[split]] = -1
        with h5py.File(base / folder / f"{SPLITS[split]}_{stem}.h5", "w") as handle:
            handle.create_dataset("data", data=np.asarray(clouds, np.float32))
            handle.create_dataset("label", data=labels)
            handle.create_dataset("mask", data=mask)
    return base
