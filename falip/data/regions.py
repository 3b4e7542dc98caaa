"""Your own images and boxes, no labels: a regions file for ``experiment=predict`` and :func:`falip.predict`.

Two formats, told apart by the file's suffix:

* COCO-format JSON (``.json``): ``images`` (``id``, ``file_name``, optionally ``width``, ``height``) and
  ``annotations`` (``image_id``, ``bbox`` = ``[x, y, width, height]``, optionally ``id``); ``categories`` are
  optional and unused. Every image with at least one box is one item; an image without boxes is left out
  (counted in the split's notes).
* box-jsonl (``.jsonl``): one image per line, ``{"file_name": "photos/a.jpg", "boxes": [[x0, y0, x1, y1],
  ...]}`` with xyxy pixel boxes, optionally ``"id"`` (the image's id; default: its line number) and
  ``"box_ids"`` (one per box; default: 0, 1, ...).

``file_name`` is relative to ``image_root`` (default: the regions file's folder) and must stay inside it.
Boxes are pixels of the image as stored; a box of zero area is dropped and counted (it has no token to
attend to); a box outside its image is a one-line error when the image is read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import DatasetError
from ..geometry import Box
from .coco import image_in_root, load_coco
from .images import read_rgb

FORMATS = {".json": "COCO-format JSON", ".jsonl": "box-jsonl"}


@dataclass
class RegionsImage:
    """One image and the boxes to look at in it."""

    image_id: int | str
    file_name: str
    image_path: Path
    boxes: list[Box]
    box_ids: list[int | str]
    width: int | None = None
    height: int | None = None

    def load_image(self) -> Image.Image:
        """The image as RGB. Raises FileNotFoundError / PIL.UnidentifiedImageError on bad files."""
        return read_rgb(self.image_path)


@dataclass
class RegionsSet:
    """Every image of a regions file (the ``all`` split of ``dataset.format=regions``)."""

    images: list[RegionsImage]
    source: str
    dataset: str = "regions"
    split: str = "all"
    notes: list[str] = field(default_factory=list)

    @property
    def num_boxes(self) -> int:
        return sum(len(image.boxes) for image in self.images)


def _box(values: Any, where: str, xywh: bool) -> Box | None:
    """A box as xyxy floats (``None`` for zero area); a malformed one is a one-line error."""
    if (not isinstance(values, (list, tuple)) or len(values) != 4
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values)):
        shape = "[x, y, width, height]" if xywh else "[x0, y0, x1, y1]"
        raise DatasetError(f"{where}: box {values!r} is not 4 numbers {shape}")
    x0, y0, a, b = (float(v) for v in values)
    x1, y1 = (x0 + a, y0 + b) if xywh else (a, b)
    if x1 < x0 or y1 < y0:
        raise DatasetError(f"{where}: box {values!r} has its far corner before its near one "
                           f"({'negative width or height' if xywh else 'x1 < x0 or y1 < y0'})")
    return None if x1 == x0 or y1 == y0 else (x0, y0, x1, y1)


def _from_coco(path: Path, root: Path) -> tuple[list[RegionsImage], list[str]]:
    coco = load_coco(path, categories=False)  # optional and unused: no label is read
    images, zero, bare = [], 0, 0
    for image_id in sorted(coco.imgs, key=lambda key: str(key)):
        record = coco.imgs[image_id]
        boxes, ids = [], []
        for ann in coco.imgToAnns.get(image_id, []):
            if "bbox" not in ann:
                raise DatasetError(f"{path}: annotation {ann.get('id', '?')} of image {image_id} has no 'bbox'")
            box = _box(ann["bbox"], f"{path}: annotation {ann.get('id', '?')} of image {image_id}", xywh=True)
            if box is None:
                zero += 1
                continue
            boxes.append(box)
            ids.append(ann.get("id", len(ids)))
        if not boxes:
            bare += 1
            continue
        where = f"{path}: image {image_id}"
        images.append(RegionsImage(image_id, record["file_name"], image_in_root(root, record["file_name"], where),
                                   boxes, ids, record.get("width"), record.get("height")))
    notes = [f"{zero} zero-area box(es) dropped"] if zero else []
    return images, notes + ([f"{bare} image(s) without boxes left out"] if bare else [])


def _from_jsonl(path: Path, root: Path) -> tuple[list[RegionsImage], list[str]]:
    images, zero, seen = [], 0, set()
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{where} is not JSON: {error}") from None
        if not isinstance(record, dict) or "file_name" not in record or not isinstance(record.get("boxes"), list):
            raise DatasetError(f"{where}: expected {{\"file_name\": ..., \"boxes\": [[x0, y0, x1, y1], ...]}}")
        image_id = record.get("id", number)
        if image_id in seen:
            raise DatasetError(f"{where}: image id {image_id!r} is used twice")
        seen.add(image_id)
        box_ids = record.get("box_ids", list(range(len(record["boxes"]))))
        if not isinstance(box_ids, list) or len(box_ids) != len(record["boxes"]):
            raise DatasetError(f"{where}: 'box_ids' must list one id per box")
        boxes, ids = [], []
        for box_id, values in zip(box_ids, record["boxes"]):
            box = _box(values, where, xywh=False)
            if box is None:
                zero += 1
                continue
            boxes.append(box)
            ids.append(box_id)
        if not boxes:
            raise DatasetError(f"{where} has no box of non-zero area: give at least one [x0, y0, x1, y1]")
        images.append(RegionsImage(image_id, record["file_name"], image_in_root(root, record["file_name"], where),
                                   boxes, ids))
    return images, [f"{zero} zero-area box(es) dropped"] if zero else []


def load_regions(path: str | Path, image_root: str | Path | None = None) -> RegionsSet:
    """The images and boxes of a regions file (module docstring), image paths under ``image_root``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"regions file {path} does not exist (a COCO-format .json or a box .jsonl)")
    if path.suffix not in FORMATS:
        raise DatasetError(f"regions file {path}: unknown format {path.suffix!r}; use "
                           + " or ".join(f"{kind} ({suffix})" for suffix, kind in FORMATS.items()))
    root = Path(image_root) if image_root else path.parent
    if not root.is_dir():
        raise DatasetError(f"image_root {root} is not a folder (the folder the regions file's file_names are in)")
    images, notes = (_from_coco if path.suffix == ".json" else _from_jsonl)(path, root)
    if not images:
        raise DatasetError(f"regions file {path} names no image with a box")
    return RegionsSet(images, source=f"{path} ({FORMATS[path.suffix]}), images under {root}", notes=notes)
