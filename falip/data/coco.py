"""Reading COCO-format instance files safely, and keeping the image paths they name inside the image root.

COCO-style files (refer's ``instances.json``, COCO / LVIS ``instances_*.json``) name images by a
``file_name`` relative to an image folder. A ``file_name`` such as ``../../../etc/x.png`` or an absolute
path would read outside that folder: :func:`image_in_root` refuses both, in every format whose paths are
relative by definition (COCO, CUB's lists, Waterbirds' metadata).
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import DatasetError


def image_in_root(root: str | Path, relative: Any, where: str) -> Path:
    """``root / relative`` after checking that ``relative`` is a non-empty relative path that stays inside
    ``root`` (no ``..`` that climbs out, not absolute); ``where`` names the record in the error."""
    if not isinstance(relative, str) or not relative.strip():
        raise DatasetError(f"{where} has no usable file name ({relative!r}): expected a path relative to {root}")
    parts = PurePosixPath(relative.replace("\\", "/"))
    if parts.is_absolute() or Path(relative).is_absolute():
        raise DatasetError(f"{where} names the absolute path {relative!r}; this format's paths are relative to {root}")
    depth = 0
    for part in parts.parts:
        depth += -1 if part == ".." else (0 if part in (".", "") else 1)
        if depth < 0:
            raise DatasetError(f"{where} names {relative!r}, which leaves the image folder {root}: refused")
    return Path(root) / relative


def file_name_from_url(url: Any) -> str | None:
    """LVIS names an image by its ``coco_url`` (``http://images.cocodataset.org/val2017/000000397133.jpg``):
    its last two parts, ``val2017/000000397133.jpg``, are its path under the COCO 2017 image root."""
    if not isinstance(url, str) or url.count("/") < 2:
        return None
    return "/".join(url.rstrip("/").split("/")[-2:])


def load_coco(path: str | Path, categories: bool = True, file_names_from_url: bool = False):
    """A ``pycocotools.coco.COCO`` index of the instances file ``path``, after checking its shape: a JSON
    object with an ``images`` list whose entries have ``id`` and ``file_name``; every problem is one
    :class:`DatasetError` naming the file and the field. ``categories=False``: the file's categories are
    not indexed (annotations need no ``category_id``). ``file_names_from_url``: an image without a
    ``file_name`` takes one from its ``coco_url`` (LVIS, :func:`file_name_from_url`)."""
    from pycocotools.coco import COCO

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path} is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path} is not a COCO instances file: its top level is a {type(data).__name__}, expected "
                           f"an object with 'images', 'annotations' and 'categories'")
    images = data.get("images")
    if not isinstance(images, list):
        raise DatasetError(f"{path} is not a COCO instances file: 'images' is {type(images).__name__}, expected a list")
    for number, image in enumerate(images):
        if file_names_from_url and isinstance(image, dict) and "file_name" not in image:
            named = file_name_from_url(image.get("coco_url"))
            if named:
                image["file_name"] = named
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            keys = sorted(image) if isinstance(image, dict) else type(image).__name__
            raise DatasetError(f"{path}: images[{number}] lacks 'id' or 'file_name' (has {keys})")
    if not isinstance(data.get("annotations", []), list):
        raise DatasetError(f"{path}: 'annotations' must be a list")
    if not categories:
        data.pop("categories", None)
    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"{path} is not a COCO instances file: {type(error).__name__}: {error}") from None
    return coco
