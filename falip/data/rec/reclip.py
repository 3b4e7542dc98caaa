"""RefCOCO / RefCOCO+ / RefCOCOg as ReCLIP's jsonl files (the released FALIP code's input).

``<root>/<dataset>_<split lower-cased>.jsonl`` (e.g. ``refcoco_testa.jsonl``, ``refcocog_test.jsonl``),
one ref per line: ``file_name`` (ref-style, e.g. ``COCO_train2014_000000581857_16.jpg``: for COCO the
real file drops the trailing ``_<n>``, as the released code does), ``image_id``, ``anns`` (all
annotations of the image, ``bbox`` = [x, y, w, h], ``id``), ``ann_id`` (int, str or list) and
``sentences`` (``raw``). Images come from ``image_dir`` (COCO train2014).
"""
from __future__ import annotations

import json
from pathlib import Path

from ...errors import DatasetError
from ...geometry import xywh_to_xyxy
from ..coco import image_in_root
from .types import RecImage, RecSentence, RecSplit


def reclip_path(root: str | Path, dataset: str, split: str) -> Path:
    return Path(root) / f"{dataset}_{split.lower()}.jsonl"


def real_file_name(file_name: str) -> str:
    """ReCLIP stores ref-style names; for COCO images the real file drops the trailing ``_<ref>``."""
    if "coco" in file_name.lower():
        return "_".join(file_name.split("_")[:-1]) + ".jpg"
    return file_name


def _targets(ann_id) -> tuple:
    return tuple(ann_id) if isinstance(ann_id, list) else (ann_id,)


def load_reclip_split(root: str | Path, dataset: str, split: str, *, image_dir: str | Path | None) -> RecSplit:
    """All sentences of the jsonl grouped by image; candidates = the image's ``anns`` (gold)."""
    path = reclip_path(root, dataset, split)
    if not path.is_file():
        found = sorted(p.name for p in Path(root).glob("*.jsonl")) if Path(root).is_dir() else []
        raise DatasetError(f"{path} not found (jsonl files in {root}: {found})")
    if image_dir is None:
        raise DatasetError(f"the ReCLIP layout has no images: set dataset.image_dir to COCO's train2014 folder "
                           f"(http://images.cocodataset.org/zips/train2014.zip)")
    image_dir = Path(image_dir)
    images: dict = {}
    disagreements = 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            datum = json.loads(line)
            image_id, anns, sentences = datum["image_id"], datum["anns"], datum["sentences"]
            boxes = {ann["id"]: xywh_to_xyxy(ann["bbox"]) for ann in anns}
            file_name = real_file_name(datum["file_name"])
            targets = _targets(datum["ann_id"])
        except json.JSONDecodeError as error:
            raise DatasetError(f"{where}: not JSON ({error})") from None
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(f"{where}: malformed ref, field {error} missing or wrong "
                               f"(need file_name, image_id, anns[].bbox/id, ann_id, sentences[].raw)") from None
        if image_id not in images:
            images[image_id] = RecImage(image_id, image_in_root(image_dir, file_name, f"{where}: file_name"),
                                        list(boxes.values()), list(boxes), boxes, [])
        record = images[image_id]
        if boxes != record.gold_boxes:
            disagreements += 1
        for target in targets:
            if target not in record.gold_boxes:
                raise DatasetError(f"{where}: ann_id {target} is not among the anns of image {image_id}")
        for index, sentence in enumerate(sentences):
            if not isinstance(sentence, dict) or "raw" not in sentence:
                raise DatasetError(f"{where}: sentence {index} lacks field 'raw'")
            record.sentences.append(RecSentence(sentence.get("sent_id", f"{number}.{index}"), sentence["raw"],
                                                targets, datum.get("ref_id")))
    if not images:
        raise DatasetError(f"{path} has no refs")
    notes = [f"{disagreements} refs listed other anns than the first ref of their image; the first was used"] \
        if disagreements else []
    return RecSplit(dataset, split, list(images.values()), source=f"{path}; images {image_dir}", notes=notes)
