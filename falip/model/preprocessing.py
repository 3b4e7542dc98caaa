"""Image -> model-input pixels, with the geometry that says where boxes land. Model-free and picklable,
so dataloader workers can run it without holding the model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..geometry import ResizeGeometry, resize_geometry, resize_to_input

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESAMPLE_BICUBIC = int(Image.BICUBIC)  # CLIP's; a checkpoint's preprocessor_config.json may name another


@dataclass(frozen=True)
class ImagePreprocessor:
    """Resize (``squash`` or ``crop``, PIL filter ``resample``: 3 bicubic as CLIP, 2 bilinear as SigLIP) +
    normalise for a ViT with square input ``image_size``."""

    image_size: int
    patch_size: int
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD
    resample: int = RESAMPLE_BICUBIC

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid_size**2 + 1

    def geometry(self, image_width: int, image_height: int, resize: str = "squash") -> ResizeGeometry:
        """Where an image of this size lands in the model input (boxes map through it)."""
        return resize_geometry(image_width, image_height, self.image_size, resize)

    def __call__(self, images: Image.Image | Sequence[Image.Image], resize: str = "squash") -> torch.Tensor:
        """PIL image(s) -> normalised float32 pixels ``(B, 3, S, S)`` on the CPU: ``(x / 255 - mean) / std``."""
        if isinstance(images, Image.Image):
            images = [images]
        arrays = []
        for image in images:
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            arrays.append(np.asarray(resize_to_input(rgb, self.geometry(rgb.width, rgb.height, resize), self.resample)))
        channels_first = np.stack(arrays).transpose(0, 3, 1, 2)  # uint8 (B, 3, S, S), a view
        pixels = np.empty(channels_first.shape, dtype=np.float32)
        np.divide(channels_first, np.float32(255.0), out=pixels, dtype=np.float32)  # in place: 3x faster
        pixels -= np.asarray(self.image_mean, dtype=np.float32)[:, None, None]
        pixels /= np.asarray(self.image_std, dtype=np.float32)[:, None, None]
        return torch.from_numpy(pixels)
