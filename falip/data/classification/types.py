"""The shape every classification loader yields: samples (image, ROA, label, optional group) of one split.

Every loader (box jsonl, StanfordDogs, CUB-200, ImageNet-S, Waterbirds, HF copies) fills these and
nothing else; the classification task reads nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ...errors import DatasetError
from ...geometry import Box, Region
from ..images import read_rgb


@dataclass(frozen=True)
class ClassificationSample:
    """One test image: its region of attention (one or more boxes, or a mask), its label (0-based) and,
    for group-robustness sets (Waterbirds), its group. ``problem`` marks a sample the loader found
    unusable (e.g. an ImageNet-S mask without the image's class): loading it raises, so the run
    stops or, with ``run.skip_bad_samples=true``, records a skip."""

    sample_id: str
    image_path: Path
    roa: Region | Box
    label: int
    embedded_image: Any = field(default=None, compare=False, repr=False)  # an in-memory PIL image
    group: int | None = None
    problem: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "roa", Region.of(self.roa))

    def load_image(self) -> Image.Image:
        if self.problem:
            raise DatasetError(self.problem)
        return read_rgb(self.image_path, self.embedded_image)


@dataclass
class ClassificationSplit:
    """All samples of one split, the class names in label order, and (optionally) the group names."""

    dataset: str
    split: str
    classes: list[str]
    samples: list[ClassificationSample]
    source: str
    notes: list[str] = field(default_factory=list)
    group_names: list[str] | None = None
