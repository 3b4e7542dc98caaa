"""Reading image files as RGB, without a needless copy, and safely."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DatasetError

# Single-channel modes of more than 8 bits: PIL's convert("RGB") clips them (a 16-bit PNG turns white).
_WIDE_GRAY = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def _wide_gray_to_rgb(image: Image.Image, where: Any) -> Image.Image:
    """A 16-bit (or 32-bit integer) grayscale image scaled to 8 bits (``value * 255 / 65535``, rounded), as RGB.
    Values beyond 16 bits (a mode ``I`` image that is not a 16-bit scan) are refused."""
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise DatasetError(f"image {where} is a {image.mode} grayscale image with values {values.min()}..{values.max()}, "
                           f"outside 16 bits: convert it to 8-bit RGB first")
    scaled = np.rint(values * (255.0 / 65535.0)).astype(np.uint8)
    return Image.fromarray(scaled, mode="L").convert("RGB")


def read_rgb(path: Path | str, embedded: Any = None) -> Image.Image:
    """The image at ``path`` (or the in-memory PIL image ``embedded``) as a decoded RGB image.

    A file already in RGB is returned as decoded (``convert`` would copy it: a sizeable share of a
    small model's evaluation time). Visual prompts never draw on their input (they copy), so the
    result may be shared. 16-bit grayscale is scaled to 8 bits (PIL alone would clip it to white).
    Raises FileNotFoundError / PIL.UnidentifiedImageError / OSError on missing or corrupt files, and
    :class:`DatasetError` for an image over PIL's decompression-bomb limit (never decoded).
    """
    where = path if embedded is None else "(in memory)"
    if embedded is not None:
        image = embedded
    else:
        try:
            image = Image.open(path)
            image.load()  # decodes; closes the file of a single-frame image opened from a path
        except Image.DecompressionBombError as error:
            raise DatasetError(f"image {path} is too large to decode safely ({error}); a decompression bomb "
                               f"or a huge scan: resize it, or raise PIL.Image.MAX_IMAGE_PIXELS") from None
    if image.mode == "RGB" and not getattr(image, "is_animated", False):
        return image
    try:
        if image.mode in _WIDE_GRAY:
            return _wide_gray_to_rgb(image, where)
        return image.convert("RGB")  # the first frame of a multi-frame file, like convert on the open file
    finally:
        if embedded is None:
            image.close()
