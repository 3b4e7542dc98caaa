"""Detector proposals as REC candidates (ReCLIP's ``<dataset>_dets_dict.json``).

Two forms, as the released code accepts: a dict ``image_id -> [[x, y, w, h], ...]`` or a list of
``{"image_id": ..., "box": [x, y, w, h]}``. An image without detections gets the whole image as its
one candidate (as the released code does); such images are counted in the split's notes.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from PIL import Image

from ...errors import DatasetError
from ...geometry import Box, xywh_to_xyxy
from .types import RecImage, RecSplit


def load_detections(path: str | Path) -> dict[int, list[Box]]:
    """image id (int) -> xyxy boxes."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"detections file {path} not found (ReCLIP ships <dataset>_dets_dict.json)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path} is not JSON: {error}") from None
    detections: dict[int, list[Box]] = {}
    try:
        if isinstance(data, dict):
            for image_id, boxes in data.items():
                detections[int(image_id)] = [xywh_to_xyxy(box) for box in boxes]
        elif isinstance(data, list):
            for record in data:
                detections.setdefault(int(record["image_id"]), []).append(xywh_to_xyxy(record["box"]))
        else:
            raise TypeError(f"top level is {type(data).__name__}")
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"{path}: expected {{image_id: [[x,y,w,h], ...]}} or [{{image_id, box}}], "
                           f"failed on {type(error).__name__}: {error}") from None
    return detections


def _image_size(record: RecImage) -> tuple[int, int]:
    if record.width and record.height:
        return record.width, record.height
    if record.embedded_image is not None:
        return record.embedded_image.size
    with Image.open(record.image_path) as image:
        return image.size


def with_detections(split: RecSplit, detections: dict[int, list[Box]], source: str = "") -> RecSplit:
    """The split with each image's candidates replaced by its detections (gold boxes kept for IoU)."""
    images, empty = [], 0
    for record in split.images:
        boxes = detections.get(int(record.image_id)) if str(record.image_id).lstrip("-").isdigit() else None
        if not boxes:
            empty += 1
            width, height = _image_size(record)
            boxes = [(0.0, 0.0, float(width), float(height))]
        images.append(replace(record, candidates=list(boxes), candidate_ids=[None] * len(boxes)))
    notes = list(split.notes) + [f"candidates = detections{' from ' + source if source else ''}"]
    if empty:
        notes.append(f"{empty} images had no detections: the whole image is their one candidate")
    return replace(split, images=images, candidate_setting="detections", notes=notes,
                   source=split.source + (f"; detections {source}" if source else ""))
