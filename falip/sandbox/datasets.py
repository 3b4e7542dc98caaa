"""Sandbox datasets: generated scenes written once, in real on-disk formats, and cached.

* ``shapes_rec``: the refer toolkit's layout (``shapes/instances.json`` + ``shapes/refs(synthetic).p``
  + PNGs under ``images/mscoco/images/train2014``), every object of a scene referred to by its
  expression ("red circle"), one split per number of objects -- read back by the RefCOCO loader.
* ``shapes_cls``: the box-classification format (``classes.txt`` + ``<split>.jsonl`` + PNGs), one
  random object of each scene as the region to classify among the 20 colour-shape classes.

A dataset is keyed by its generator parameters; it is built in a temporary folder and renamed into
place, so an interrupted build never leaves a half-written dataset behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.box_classification import write_box_classification
from ..data.writers import write_refer_dataset
from .cache import cache_root
from .scenes import CLASS_NAMES, generate_scene

FORMAT_VERSION = 1
MARKER = ".falip-generated.json"
REC_DATASET_DIR, REC_SPLIT_BY = "shapes", "synthetic"


def _scenes(seed: int, split_index: int, num_objects: int, count: int, width: int, height: int):
    rng = np.random.default_rng([seed, split_index, num_objects])  # independent stream per split
    return [generate_scene(rng, num_objects, width, height) for _ in range(count)]


def write_shapes_rec(root: Path, seed: int, scenes_per_split: int, width: int, height: int,
                     splits: dict[str, int], dataset_dir: str = REC_DATASET_DIR, split_by: str = REC_SPLIT_BY,
                     file_pattern: str = "shapes_{:06d}.png") -> None:
    """Scenes as a refer-layout REC dataset. ``dataset_dir``/``split_by``/``file_pattern`` let tests dress it
    as RefCOCO itself (``refcoco``, ``unc``, ``COCO_train2014_{:012d}.jpg``)."""
    images, annotations, refs = [], [], []
    for split_index, (split, num_objects) in enumerate(splits.items()):
        for scene in _scenes(seed, split_index, int(num_objects), scenes_per_split, width, height):
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": file_pattern.format(image_id), "image": scene.image})
            for obj in scene.objects:
                ann_id = len(annotations) + 1
                x0, y0, x1, y1 = obj.box
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": obj.label + 1,
                                    "bbox": [x0, y0, x1 - x0, y1 - y0]})
                refs.append({"ref_id": len(refs), "ann_id": ann_id, "image_id": image_id, "split": split,
                             "sentences": [obj.expression]})
    categories = [{"id": index + 1, "name": name} for index, name in enumerate(CLASS_NAMES)]
    write_refer_dataset(root, dataset_dir, split_by, images, annotations, categories, refs)


def write_shapes_cls(root: Path, seed: int, scenes_per_split: int, width: int, height: int,
                     splits: dict[str, int]) -> None:
    samples = {}
    for split_index, (split, num_objects) in enumerate(splits.items()):
        rng = np.random.default_rng([seed, split_index, num_objects, 1])
        rows = []
        for index, scene in enumerate(_scenes(seed, split_index, int(num_objects), scenes_per_split, width, height)):
            target = scene.objects[int(rng.integers(len(scene.objects)))]
            rows.append((f"{split}_{index:05d}", scene.image, target.box, target.label))
        samples[split] = rows
    write_box_classification(root, list(CLASS_NAMES), samples)


BUILDERS: dict[str, Callable[..., None]] = {"shapes_rec": write_shapes_rec, "shapes_cls": write_shapes_cls}


def dataset_key(generator: dict) -> str:
    payload = json.dumps({"format_version": FORMAT_VERSION, **generator}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def build_dataset(generator: dict, root: str | Path | None = None) -> Path:
    """Write the generated dataset (once) and return its root; ``root=None`` = the cache folder."""
    generator = dict(generator)
    kind = generator.pop("kind", None)
    if kind not in BUILDERS:
        raise ValueError(f"dataset.generator.kind must be one of {sorted(BUILDERS)}, got {kind!r}")
    key = dataset_key({"kind": kind, **generator})
    target = Path(root) if root else cache_root() / f"{kind}-{key}"
    marker = target / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("key") == key:
        return target
    if target.exists() and any(target.iterdir()) and not marker.is_file():
        raise FileExistsError(f"{target} exists and is not a falip-generated dataset: choose another dataset.root "
                              f"or leave it null to use the cache")
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        BUILDERS[kind](tmp, **generator)
        (tmp / MARKER).write_text(json.dumps({"key": key, "kind": kind, "generator": generator,
                                              "format_version": FORMAT_VERSION}, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
