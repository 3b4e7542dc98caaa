"""Reading image files as RGB, without a needless copy."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image


def read_rgb(path: Path | str, embedded: Any = None) -> Image.Image:
    """The image at ``path`` (or the in-memory PIL image ``embedded``) as a decoded RGB image.

    A file already in RGB is returned as decoded (``convert`` would copy it: a sizeable share of a
    small model's evaluation time). Visual prompts never draw on their input (they copy), so the
    result may be shared. Raises FileNotFoundError / PIL.UnidentifiedImageError / OSError on missing
    or corrupt files.
    """
    if embedded is not None:
        return embedded if embedded.mode == "RGB" else embedded.convert("RGB")
    image = Image.open(path)
    image.load()  # decodes; closes the file of a single-frame image opened from a path
    if image.mode == "RGB" and not getattr(image, "is_animated", False):
        return image
    try:
        return image.convert("RGB")  # the first frame of a multi-frame file, like convert on the open file
    finally:
        image.close()
