"""The shape every classification loader yields: samples (image, ROA, label) of one split, with the class names."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ...geometry import Box
from ..images import read_rgb


@dataclass(frozen=True)
class ClassificationSample:
    sample_id: str
    image_path: Path
    box: Box
    label: int
    embedded_image: Any = field(default=None, compare=False, repr=False)  # an in-memory PIL image

    def load_image(self) -> Image.Image:
        return read_rgb(self.image_path, self.embedded_image)


@dataclass
class ClassificationSplit:
    dataset: str
    split: str
    classes: list[str]
    samples: list[ClassificationSample]
    source: str
    notes: list[str] = field(default_factory=list)
