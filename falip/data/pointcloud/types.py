"""The shape both point-cloud loaders yield, and the HDF5 reading they share (h5py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import DatasetError


@dataclass(frozen=True)
class PointCloudSample:
    """One test shape: ``points`` ``(N, 3)`` float32 (non-finite points already dropped), its label
    (0-based) and how many points were dropped."""

    sample_id: str
    points: np.ndarray = field(repr=False)
    label: int
    dropped_points: int = 0


@dataclass
class PointCloudSplit:
    """All shapes of one split, the class names in label order, where they were read."""

    dataset: str
    split: str
    classes: list[str]
    samples: list[PointCloudSample]
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def dropped_points(self) -> int:
        return sum(sample.dropped_points for sample in self.samples)


def read_h5_arrays(path: Path, keys: tuple[str, ...], how_to_get: str) -> dict[str, np.ndarray]:
    """The named datasets of an HDF5 file; a missing file, key or unreadable file names the file and key."""
    import h5py

    if not path.is_file():
        raise DatasetError(f"{path} not found. {how_to_get}")
    try:
        with h5py.File(path, "r") as handle:
            missing = [key for key in keys if key not in handle]
            if missing:
                raise DatasetError(f"{path} has no dataset {missing[0]!r} (has {sorted(handle.keys())}; expected "
                                   f"{list(keys)})")
            return {key: np.asarray(handle[key]) for key in keys}
    except OSError as error:
        raise DatasetError(f"{path} is not a readable HDF5 file ({error}). {how_to_get}") from None


def samples_from_arrays(path: Path, data: np.ndarray, labels: np.ndarray, num_points: int | None, num_classes: int,
                        prefix: str) -> list[PointCloudSample]:
    """Check shapes and label range, keep the first ``num_points`` points of each shape, drop NaN/inf points."""
    if data.ndim != 3 or data.shape[-1] != 3:
        raise DatasetError(f"{path}: dataset 'data' has shape {data.shape}, expected (N, points, 3)")
    labels = np.asarray(labels).reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(data):
        raise DatasetError(f"{path}: dataset 'label' has shape {np.shape(labels)}, expected ({len(data)},) or "
                           f"({len(data)}, 1)")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"{path}: dataset 'label' holds {int(labels.min())}..{int(labels.max())}, outside the "
                           f"{num_classes} class names (0..{num_classes - 1})")
    if num_points is not None:
        if num_points < 1:
            raise DatasetError(f"dataset.num_points={num_points} must be >= 1")
        data = data[:, :num_points]
    samples = []
    for index, (cloud, label) in enumerate(zip(data.astype(np.float32), labels)):
        finite = np.isfinite(cloud).all(1)
        samples.append(PointCloudSample(f"{prefix}{index}", cloud[finite], int(label), int((~finite).sum())))
    return samples


def read_class_names(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{path} not found (one class name per line, in label order)")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
