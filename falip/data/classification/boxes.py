"""The project's own box-classification format: classify the object inside a given region.

Layout (also a simple way to run FALIP on your own images)::

    <root>/classes.txt          one class name per line; line i (0-based) = label i
    <root>/<split>.jsonl        one sample per line:
                                {"id": "...", "file_name": "images/0001.png", "box": [x0, y0, x1, y1], "label": 3}
                                ("boxes": [[x0, y0, x1, y1], ...] instead of "box": several boxes, one ROA)
    <root>/images/...           file_name is relative to root (or absolute)

``box`` is xyxy in pixels of the image as stored.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from PIL import Image

from ...errors import DatasetError
from ...geometry import Box, Region
from .types import ClassificationSample, ClassificationSplit


def read_classes(root: Path) -> list[str]:
    path = root / "classes.txt"
    if not path.is_file():
        raise DatasetError(f"{path} not found: a box-classification root needs classes.txt (one class per line)")
    classes = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not classes:
        raise DatasetError(f"{path} lists no classes")
    return classes


def _label(value: object) -> int:
    """A class index: an integer (``3`` or ``3.0``); ``2.7``, ``"3"`` or ``true`` are refused, never rounded."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ValueError(f"field 'label' = {value!r} is not an integer class index")
    return int(value)


def check_box_classification_root(root: str | Path, splits: Sequence[str]) -> None:
    """The cheap checks (nothing parsed): the root, classes.txt and each split's jsonl exist."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"box-classification root {root} does not exist (dataset.root)")
    if not (root / "classes.txt").is_file():
        raise DatasetError(f"{root / 'classes.txt'} not found: a box-classification root needs classes.txt "
                           f"(one class per line)")
    for split in splits:
        if not (root / f"{split}.jsonl").is_file():
            available = sorted(p.stem for p in root.glob("*.jsonl"))
            raise DatasetError(f"split {split!r} not found: {root / (split + '.jsonl')} does not exist; "
                               f"splits here: {available}")


def load_box_classification_split(root: str | Path, split: str, name: str = "boxes") -> ClassificationSplit:
    """Read ``<root>/<split>.jsonl`` + ``classes.txt`` (see the module docstring for the format)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"box-classification root {root} does not exist")
    classes = read_classes(root)
    path = root / f"{split}.jsonl"
    if not path.is_file():
        available = sorted(p.stem for p in root.glob("*.jsonl"))
        raise DatasetError(f"split {split!r} not found: {path} does not exist; splits here: {available}")
    samples = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            boxes = [tuple(float(v) for v in box) for box in (record["boxes"] if "boxes" in record else [record["box"]])]
            label = _label(record["label"])
            file_name = record["file_name"]
        except (ValueError, KeyError, TypeError) as error:
            raise DatasetError(f"{path}:{number}: malformed sample ({type(error).__name__}: {error}); "
                               f"need file_name, box [x0,y0,x1,y1], label") from None
        if not boxes or any(len(box) != 4 for box in boxes):
            raise DatasetError(f"{path}:{number}: field 'box' must have 4 numbers (x0, y0, x1, y1) ('boxes': a list "
                               f"of them), got {record.get('box', record.get('boxes'))}")
        if not 0 <= label < len(classes):
            raise DatasetError(f"{path}:{number}: field 'label' = {label} is not a class index (0..{len(classes) - 1})")
        samples.append(ClassificationSample(str(record.get("id", number)), root / file_name, Region(tuple(boxes)), label))
    if not samples:
        raise DatasetError(f"{path} has no samples")
    return ClassificationSplit(name, split, classes, samples, source=str(path))


def write_box_classification(root: str | Path, classes: Sequence[str],
                             splits: Mapping[str, Iterable[tuple[str, Image.Image, Box, int]]]) -> Path:
    """Write the format: ``splits[name]`` yields ``(sample_id, image, box, label)``; images go to images/<split>/."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for split, samples in splits.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        lines = []
        for sample_id, image, box, label in samples:
            file_name = f"images/{split}/{sample_id}.png"
            image.save(root / file_name)
            lines.append(json.dumps({"id": sample_id, "file_name": file_name, "box": [float(v) for v in box],
                                     "label": int(label)}))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root
