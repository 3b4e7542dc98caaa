"""Sandbox datasets: generated scenes written once, in real on-disk formats, and cached.

* ``shapes_rec``: the refer toolkit's layout (``shapes/instances.json`` + ``shapes/refs(synthetic).p``
  + PNGs under ``images/mscoco/images/train2014``), every object of a scene referred to by its
  expression ("red circle"), one split per number of objects -- read back by the RefCOCO loader.
* ``shapes_cls``: the box-classification format (``classes.txt`` + ``<split>.jsonl`` + PNGs), one
  random object of each scene as the region to classify among the 20 colour-shape classes.
* ``shapes_3d``: ModelNet40's HDF5 layout (``modelnet40_ply_hdf5_2048/ply_data_test0.h5`` +
  ``shape_names.txt``), posed 3D shapes (:mod:`falip.sandbox.shapes3d`) with some uniform clutter.

The dataset configs name these writers as their generator (``dataset.generator._target_``); the
experiment runner writes them once into a cache folder keyed by their arguments
(:mod:`falip.experiments.generated`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.classification.boxes import write_box_classification
from ..data.pointcloud.modelnet40 import write_modelnet40
from ..data.pointcloud.scanobjectnn import write_scanobjectnn
from ..data.rec.writers import write_refer_dataset
from .scenes import CLASS_NAMES, generate_scene
from .shapes3d import SHAPES_3D, sample_shape

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
    """Scenes as a box-classification dataset: one random object of each scene is the region to classify."""
    samples = {}
    for split_index, (split, num_objects) in enumerate(splits.items()):
        rng = np.random.default_rng([seed, split_index, num_objects, 1])
        rows = []
        for index, scene in enumerate(_scenes(seed, split_index, int(num_objects), scenes_per_split, width, height)):
            target = scene.objects[int(rng.integers(len(scene.objects)))]
            rows.append((f"{split}_{index:05d}", scene.image, target.box, target.label))
        samples[split] = rows
    write_box_classification(root, list(CLASS_NAMES), samples)


def shapes_3d_arrays(seed: int, shapes_per_class: int, cluttered_fraction: float, max_clutter: float,
                     stream: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posed 3D shapes, ``shapes_per_class`` of each in random order (2,048 points): clouds ``(N, 2048, 3)``,
    labels ``(N,)`` and a clutter mask ``(N, 2048)`` (True = a clutter point). A ``cluttered_fraction``
    of the shapes has 5 % to ``max_clutter`` of its points replaced by uniform clutter."""
    rng = np.random.default_rng([seed, stream])
    count = len(SHAPES_3D) * shapes_per_class
    labels = np.repeat(np.arange(len(SHAPES_3D)), shapes_per_class)[rng.permutation(count)]
    clutter = np.where(rng.uniform(size=count) < cluttered_fraction,
                       rng.uniform(min(0.05, max_clutter), max_clutter, count), 0.0)
    clouds, masks = [], []
    for label, amount in zip(labels, clutter):
        cloud, mask = sample_shape(rng, SHAPES_3D[label], clutter=float(amount), return_clutter=True)
        clouds.append(cloud)
        masks.append(mask)
    return np.stack(clouds), labels, np.stack(masks)


def write_shapes_3d(root: Path, seed: int, shapes_per_class: int, cluttered_fraction: float, max_clutter: float,
                    splits=("test",)) -> None:
    """:func:`shapes_3d_arrays` per split, as a ModelNet40-layout dataset (``shape_names.txt`` = the 3D shapes)."""
    data = {split: shapes_3d_arrays(seed, shapes_per_class, cluttered_fraction, max_clutter, index)[:2]
            for index, split in enumerate(splits)}
    write_modelnet40(root, list(SHAPES_3D), data)


def write_shapes_3d_scanobjectnn(root: Path, seed: int, shapes_per_class: int, cluttered_fraction: float,
                                 max_clutter: float, variant: str = "PB_T50_RS", scale: float = 4.0) -> Path:
    """The same shapes as a ScanObjectNN release file of ``variant``: in scan units (x ``scale``, shifted,
    so the loader's normalisation matters), clutter points marked -1 in ``mask``; plus
    ``classnames.txt`` (the 3D shapes, for ``dataset.classnames``). Returns the ``h5_files`` folder."""
    clouds, labels, clutter = shapes_3d_arrays(seed, shapes_per_class, cluttered_fraction, max_clutter)
    folder = write_scanobjectnn(root, variant, {"test": (clouds * scale + 2.0, labels)}, background={"test": clutter})
    (folder / "classnames.txt").write_text("".join(f"{name}\n" for name in SHAPES_3D))
    return folder
