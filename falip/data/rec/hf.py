"""REC splits from HuggingFace ``datasets`` (a Hub id read from the HF cache, or a local folder).

Two community schemas are recognised from their column names (both read from the datasets' public cards,
not checked against the Hub from here; adapters are kept small on purpose):

* **refer-like** (``jxu124/refcoco``, ``jxu124/refcocoplus``, ``jxu124/refcocog``): one row per ref with
  ``image_id``, ``ann_id``, ``split``, ``sentences`` (dicts with ``raw``, or strings), a target box
  (``bbox`` [x, y, w, h] or ``raw_anns``) and an image path (``image_path`` / ``file_name``) under
  ``image_dir``. If ``raw_anns`` lists every annotation of the image they are the candidates;
  otherwise the candidates are the distinct referred boxes of that image across the loaded rows.
* **lmms-style** (``lmms-lab/RefCOCO`` ...): one row per ref with an embedded ``image``, a target
  ``bbox`` [x, y, w, h] and the expressions in ``answer`` (list) or ``question``; candidates are the
  distinct target boxes of rows with the same ``file_name`` in the split.

Whenever candidates are not "every COCO annotation of the image" the split's notes say so: the
gold-candidate protocol then differs from the paper's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import DatasetError
from ...geometry import xywh_to_xyxy
from .reclip import real_file_name
from .refer import refer_split_rule
from .types import RecImage, RecSentence, RecSplit

REFER_LIKE = {"image_id", "ann_id", "sentences"}
LMMS_STYLE = {"image", "bbox"}
UNION_NOTE = ("candidates = the distinct referred boxes of each image in this HF variant, not every COCO "
              "annotation of the image as in the paper's gold setting: accuracies are not comparable with it")


def _how_to_get(hf_id: str) -> str:
    return (f"Download it on a machine with internet access with `huggingface-cli download --repo-type dataset "
            f"{hf_id}` (fills the HF cache), or use the refer layout (dataset.root=<dir with refcoco/instances.json "
            f"and refs(unc).p>) or ReCLIP's jsonl files (dataset.layout=reclip); see docs/datasets.md.")


def _load(hf_id: str, cache_dir: str | None):
    import datasets

    try:
        if Path(hf_id).is_dir():
            return datasets.load_dataset(str(hf_id), cache_dir=cache_dir)
        return datasets.load_dataset(hf_id, cache_dir=cache_dir)
    except Exception as error:  # datasets raises many types for "not cached / offline / not found"
        cache = cache_dir or datasets.config.HF_DATASETS_CACHE
        raise DatasetError(f"could not load HF dataset {hf_id!r} (looked in the cache {cache}): "
                           f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}. "
                           + _how_to_get(hf_id)) from None


def _rows_of_split(loaded, split: str, hf_id: str) -> tuple[list[dict], list[dict]]:
    """(rows of the split, all rows) -- the split is a DatasetDict key or a value of a ``split`` column."""
    everything = [row for name in loaded for row in loaded[name]]
    if split in loaded:
        return list(loaded[split]), everything
    if everything and "split" in everything[0]:
        matches = refer_split_rule(split)
        chosen = [row for row in everything if matches(row["split"])]
        if chosen:
            return chosen, everything
    names = sorted(set(loaded) | ({str(r["split"]) for r in everything} if everything and "split" in everything[0] else set()))
    raise DatasetError(f"HF dataset {hf_id!r} has no split {split!r} (found: {names})")


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _sentences(value: Any) -> list[str]:
    value = _maybe_json(value)
    if isinstance(value, str):
        return [value]
    return [item["raw"] if isinstance(item, dict) else str(item) for item in value or []]


def _refer_like(rows: list[dict], everything: list[dict], split: str, hf_id: str, image_dir: Path | None) -> RecSplit:
    if image_dir is None:
        raise DatasetError(f"HF dataset {hf_id!r} carries no images: set dataset.image_dir to COCO's train2014 folder")
    referred: dict = {}  # image_id -> {ann_id: box} from every row (the union fallback)
    full: dict = {}      # image_id -> {ann_id: box} when raw_anns lists all anns of the image
    for row in everything:
        anns = _maybe_json(row.get("raw_anns"))
        if isinstance(anns, list) and anns and all(isinstance(a, dict) and "bbox" in a for a in anns):
            full[row["image_id"]] = {a["id"]: xywh_to_xyxy(a["bbox"]) for a in anns}
        box = row.get("bbox") if row.get("bbox") is not None else (anns.get("bbox") if isinstance(anns, dict) else None)
        if box is not None:
            referred.setdefault(row["image_id"], {})[row["ann_id"]] = xywh_to_xyxy(box)
    images: dict = {}
    used_union = False
    for row in rows:
        image_id = row["image_id"]
        if image_id not in images:
            boxes = full.get(image_id)
            if boxes is None:
                boxes, used_union = referred.get(image_id, {}), True
            name = row.get("image_path") or real_file_name(str(row.get("file_name", "")))
            if not name:
                raise DatasetError(f"HF dataset {hf_id!r}: row of ref {row.get('ref_id')} has no image_path/file_name")
            images[image_id] = RecImage(image_id, Path(image_dir) / Path(name).name, list(boxes.values()),
                                        list(boxes), dict(boxes), [])
        record = images[image_id]
        if row["ann_id"] not in record.gold_boxes:
            raise DatasetError(f"HF dataset {hf_id!r}: ref {row.get('ref_id')} has no box for ann {row['ann_id']}")
        for index, text in enumerate(_sentences(row["sentences"])):
            record.sentences.append(RecSentence(f"{row.get('ref_id', image_id)}.{index}", text, (row["ann_id"],),
                                                row.get("ref_id")))
    return RecSplit(hf_id, split, list(images.values()), source=f"HF datasets {hf_id}; images {image_dir}",
                    notes=[UNION_NOTE] if used_union else [])


def _lmms_style(rows: list[dict], split: str, hf_id: str) -> RecSplit:
    images: dict = {}
    for number, row in enumerate(rows):
        key = row.get("file_name") or f"row{number}"
        box = xywh_to_xyxy(row["bbox"])
        if key not in images:
            images[key] = RecImage(key, Path(str(key)), [], [], {}, [], embedded_image=row["image"])
        record = images[key]
        if box not in record.candidates:
            record.candidates.append(box)
            record.candidate_ids.append(len(record.candidate_ids))
            record.gold_boxes[record.candidate_ids[-1]] = box
        target = record.candidate_ids[record.candidates.index(box)]
        texts = _sentences(row.get("answer")) or _sentences(row.get("question"))
        for index, text in enumerate(texts):
            record.sentences.append(RecSentence(f"{row.get('question_id', number)}.{index}", text, (target,)))
    return RecSplit(hf_id, split, list(images.values()), source=f"HF datasets {hf_id} (images embedded)",
                    notes=[UNION_NOTE])


def load_hf_split(hf_id: str, split: str, *, image_dir: str | Path | None = None,
                  cache_dir: str | None = None) -> RecSplit:
    """One REC split from a HF dataset in one of the recognised schemas (see the module docstring)."""
    loaded = _load(hf_id, cache_dir)
    rows, everything = _rows_of_split(loaded, split, hf_id)
    if not rows:
        raise DatasetError(f"HF dataset {hf_id!r} split {split!r} is empty")
    columns = set(rows[0])
    if REFER_LIKE <= columns:
        return _refer_like(rows, everything, split, hf_id, Path(image_dir) if image_dir else None)
    if LMMS_STYLE <= columns:
        return _lmms_style(rows, split, hf_id)
    raise DatasetError(f"HF dataset {hf_id!r} has columns {sorted(columns)}; expected a refer-like schema "
                       f"(at least {sorted(REFER_LIKE)}) or an lmms-style one (at least {sorted(LMMS_STYLE)})")
