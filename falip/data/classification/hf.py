"""A classification split from a HF ``datasets`` copy (a Hub id read from the HF cache, or a local folder).

Community copies of these datasets differ in their columns, so the user names them:
``dataset.columns={image: image, label: label, boxes: bbox, box_format: xywh, group: place}``
(``boxes``: a column holding one box or a list of boxes; ``group`` optional). Class names come from
the label column's ``ClassLabel`` names unless ``dataset.classnames`` is given. Offline and
uncached, the error names the official layout and where to get it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ...errors import DatasetError
from ...geometry import Region, xywh_to_xyxy
from .types import ClassificationSample, ClassificationSplit

BOX_FORMATS = ("xyxy", "xywh")


def _load(hf_id: str, how_to_get: str):
    import datasets

    try:
        if Path(hf_id).is_dir():
            return datasets.load_from_disk(hf_id) if (Path(hf_id) / "dataset_dict.json").is_file() \
                else datasets.load_dataset(hf_id)
        return datasets.load_dataset(hf_id)
    except Exception as error:  # datasets raises many types for "not cached / offline / not found"
        raise DatasetError(f"could not load HF dataset {hf_id!r} (cache {datasets.config.HF_DATASETS_CACHE}): "
                           f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}. "
                           f"Download it where there is internet (`hf download --repo-type dataset {hf_id}`), "
                           f"or use the official layout: {how_to_get}") from None


def _boxes(value: Any, box_format: str, where: str) -> Region:
    if value is None:
        raise DatasetError(f"{where}: no box (FALIP needs a region of attention per image)")
    boxes = [value] if value and isinstance(value[0], (int, float)) else list(value)
    try:
        boxes = [tuple(float(v) for v in box) for box in boxes]
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: boxes must be [x0, y0, x1, y1] or lists of them, got {value!r}") from None
    if not boxes or any(len(box) != 4 for box in boxes):
        raise DatasetError(f"{where}: boxes must have 4 numbers each, got {value!r}")
    return Region(tuple(xywh_to_xyxy(box) if box_format == "xywh" else box for box in boxes))


def load_hf_classification_split(hf_id: str, split: str, columns: Mapping[str, Any], name: str,
                                 how_to_get: str) -> ClassificationSplit:
    """One split of a HF copy, read through the column names ``columns`` gives (see the module docstring)."""
    columns = {"image": "image", "label": "label", "box_format": "xyxy", **dict(columns or {})}
    if "boxes" not in columns:
        raise DatasetError(f"dataset.columns must name the box column (boxes: <column>) of {hf_id!r}")
    if columns["box_format"] not in BOX_FORMATS:
        raise DatasetError(f"dataset.columns.box_format must be one of {BOX_FORMATS}")
    loaded = _load(hf_id, how_to_get)
    if split not in loaded:
        raise DatasetError(f"HF dataset {hf_id!r} has no split {split!r} (found: {sorted(loaded)})")
    table = loaded[split]
    missing = [columns[key] for key in ("image", "label", "boxes") if columns[key] not in table.column_names]
    if columns.get("group") and columns["group"] not in table.column_names:
        missing.append(columns["group"])
    if missing:
        raise DatasetError(f"HF dataset {hf_id!r} split {split!r} has no column(s) {missing} "
                           f"(columns: {table.column_names}); set dataset.columns")
    feature = table.features[columns["label"]]
    classes = list(getattr(feature, "names", []) or [])
    samples = []
    for number, row in enumerate(table):
        where = f"HF dataset {hf_id!r} {split} row {number}"
        samples.append(ClassificationSample(str(number), Path(f"<{hf_id} {split} {number}>"),
                                            _boxes(row[columns["boxes"]], columns["box_format"], where),
                                            int(row[columns["label"]]), embedded_image=row[columns["image"]],
                                            group=int(row[columns["group"]]) if columns.get("group") else None))
    if not samples:
        raise DatasetError(f"HF dataset {hf_id!r} split {split!r} is empty")
    return ClassificationSplit(name, split, classes, samples, source=f"HF datasets {hf_id} (columns {columns})")
