"""Write REC data in the real on-disk formats: the refer toolkit's layout and ReCLIP's jsonl.

Used by the sandbox (generated scenes become a dataset the RefCOCO loaders read) and by the tests
(fixtures in exactly the official formats). Inputs are plain Python data:

* ``images``: ``[{"id": int, "file_name": str, "image": PIL.Image}, ...]`` (``.png`` names are
  saved lossless, anything else as JPEG quality 95);
* ``annotations``: ``[{"id", "image_id", "category_id", "bbox": [x, y, w, h]}, ...]``;
* ``categories``: ``[{"id", "name"}, ...]``;
* ``refs``: ``[{"ref_id", "ann_id", "image_id", "split", "sentences": [str, ...]}, ...]``
  (``category_id`` is taken from the annotation).
"""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Sequence

from .refer import default_image_dir
from .reclip import reclip_path


def _sentence_dicts(sentences: Sequence[str], first_id: int) -> list[dict]:
    return [{"tokens": re.findall(r"\w+", text.lower()), "raw": text, "sent_id": first_id + k,
             "sent": " ".join(re.findall(r"\w+", text.lower()))} for k, text in enumerate(sentences)]


def _save_images(images: Sequence[dict], image_dir: Path) -> None:
    image_dir.mkdir(parents=True, exist_ok=True)
    for record in images:
        path = image_dir / record["file_name"]
        if path.suffix.lower() == ".png":
            record["image"].save(path)
        else:
            record["image"].convert("RGB").save(path, quality=95)


def _instances(images: Sequence[dict], annotations: Sequence[dict], categories: Sequence[dict]) -> dict:
    anns = []
    for ann in annotations:
        x, y, w, h = (float(v) for v in ann["bbox"])
        anns.append({"id": ann["id"], "image_id": ann["image_id"], "category_id": ann["category_id"],
                     "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
                     "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    return {"info": {"description": "written by falip.data.writers"},
            "images": [{"id": r["id"], "file_name": r["file_name"], "width": r["image"].width,
                        "height": r["image"].height} for r in images],
            "annotations": anns, "categories": [{"supercategory": "object", **c} for c in categories]}


def write_refer_dataset(root: str | Path, dataset_dir: str, split_by: str, images: Sequence[dict],
                        annotations: Sequence[dict], categories: Sequence[dict], refs: Sequence[dict],
                        image_dir: str | Path | None = None) -> Path:
    """``<root>/<dataset_dir>/instances.json`` + ``refs(<split_by>).p`` + images (default: the refer path)."""
    root = Path(root)
    data_dir = root / dataset_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    _save_images(images, Path(image_dir) if image_dir else default_image_dir(root))
    (data_dir / "instances.json").write_text(json.dumps(_instances(images, annotations, categories)))
    category_of = {ann["id"]: ann["category_id"] for ann in annotations}
    names = {record["id"]: record["file_name"] for record in images}
    pickled, next_sentence = [], 0
    for ref in refs:
        sentences = _sentence_dicts(ref["sentences"], next_sentence)
        next_sentence += len(sentences)
        stem = Path(names[ref["image_id"]]).stem
        pickled.append({"ref_id": ref["ref_id"], "ann_id": ref["ann_id"], "image_id": ref["image_id"],
                        "category_id": category_of[ref["ann_id"]], "split": ref["split"],
                        "file_name": f"{stem}_{ref['ref_id']}.jpg", "sent_ids": [s["sent_id"] for s in sentences],
                        "sentences": sentences})
    with (data_dir / f"refs({split_by}).p").open("wb") as handle:
        pickle.dump(pickled, handle, protocol=2)
    return data_dir


def write_reclip_jsonl(root: str | Path, dataset: str, split: str, images: Sequence[dict],
                       annotations: Sequence[dict], refs: Sequence[dict], image_dir: str | Path | None = None) -> Path:
    """``<root>/<dataset>_<split>.jsonl`` with the refs of ``split`` (images saved to ``image_dir`` if given)."""
    if image_dir is not None:
        _save_images(images, Path(image_dir))
    names = {record["id"]: record["file_name"] for record in images}
    anns_of: dict = {}
    for ann in annotations:
        anns_of.setdefault(ann["image_id"], []).append(
            {"id": ann["id"], "bbox": [float(v) for v in ann["bbox"]], "category_id": ann["category_id"]})
    path = reclip_path(root, dataset, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines, next_sentence = [], 0
    for ref in refs:
        if ref["split"] != split:
            continue
        sentences = _sentence_dicts(ref["sentences"], next_sentence)
        next_sentence += len(sentences)
        name = names[ref["image_id"]]  # COCO names are stored ref-style, as ReCLIP does; others as they are
        file_name = f"{Path(name).stem}_{ref['ref_id']}.jpg" if "coco" in name.lower() else name
        lines.append(json.dumps({"file_name": file_name, "image_id": ref["image_id"],
                                 "ref_id": ref["ref_id"], "ann_id": ref["ann_id"],
                                 "anns": anns_of.get(ref["image_id"], []), "sentences": sentences}))
    path.write_text("\n".join(lines) + "\n")
    return path
