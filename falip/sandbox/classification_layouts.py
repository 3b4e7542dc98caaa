"""Sandbox scenes written in the official on-disk layouts of the classification datasets.

Each writer draws scenes (one target object among distractors) and stores them exactly as the real
dataset is stored -- JPEGs in class folders, the real index files, .mat lists, VOC XML, segmentation
PNGs, metadata.csv -- so that the real loaders and experiments run on them end to end, offline:
``falip-run experiment=cub_cls model=sandbox dataset.root=<folder> dataset.classnames=<folder>/classnames.txt``.
Class folders are named after the sandbox classes (``001.red_circle``, ``n90000001-red_circle``), and
every writer also writes ``classnames.txt`` (the sandbox names, in label order) for the datasets whose
names do not come from folders (ImageNet-S, Waterbirds).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from .scenes import CLASS_NAMES, CLASSES, generate_scene

FOLDERS = [name.replace(" ", "_") for name in CLASS_NAMES]


def _save_jpeg(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=95)


def _scene(rng, classes, width, height):
    return generate_scene(rng, len(classes), width, height, classes=classes)


def _distractors(rng, target: int, count: int) -> list[int]:
    others = [c for c in range(len(CLASSES)) if c != target]
    return [int(c) for c in rng.choice(others, size=count, replace=False)]


def write_cub_layout(root: str | Path, seed: int = 0, images: int = 40, objects: int = 3, width: int = 96,
                     height: int = 80, train_every: int = 5) -> Path:
    """``<root>/CUB_200_2011/`` with images.txt, image_class_labels.txt, classes.txt, train_test_split.txt
    (every ``train_every``-th image in train, the rest test) and bounding_boxes.txt (xywh)."""
    base = Path(root) / "CUB_200_2011"
    rng = np.random.default_rng([seed, 11])
    lines = {name: [] for name in ("images", "labels", "split", "boxes")}
    for image_id in range(1, images + 1):
        target = int(rng.integers(len(CLASSES)))
        scene = _scene(rng, [target] + _distractors(rng, target, objects - 1), width, height)
        folder = f"{target + 1:03d}.{FOLDERS[target]}"
        relative = f"{folder}/{FOLDERS[target].title()}_{image_id:04d}.jpg"
        _save_jpeg(scene.image, base / "images" / relative)
        x0, y0, x1, y1 = scene.objects[0].box
        lines["images"].append(f"{image_id} {relative}")
        lines["labels"].append(f"{image_id} {target + 1}")
        lines["split"].append(f"{image_id} {int(image_id % train_every == 0)}")
        lines["boxes"].append(f"{image_id} {x0:.1f} {y0:.1f} {x1 - x0:.1f} {y1 - y0:.1f}")
    for name, file in (("images", "images.txt"), ("labels", "image_class_labels.txt"),
                       ("split", "train_test_split.txt"), ("boxes", "bounding_boxes.txt")):
        (base / file).write_text("\n".join(lines[name]) + "\n")
    (base / "classes.txt").write_text("".join(f"{i + 1} {i + 1:03d}.{f}\n" for i, f in enumerate(FOLDERS)))
    return base


def _voc_xml(file_stem: str, size: tuple[int, int], name: str, boxes) -> str:
    objects = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{int(x0)}</xmin><ymin>{int(y0)}</ymin><xmax>{int(x1)}</xmax><ymax>{int(y1)}</ymax></bndbox>"
        f"</object>" for x0, y0, x1, y1 in boxes)
    return (f"<annotation><folder>{file_stem.split('_')[0]}</folder><filename>{file_stem}</filename>"
            f"<source><database>ImageNet database</database></source><size><width>{size[0]}</width>"
            f"<height>{size[1]}</height><depth>3</depth></size><segment>0</segment>{objects}</annotation>\n")


def _cells(strings: list[str]) -> np.ndarray:
    cells = np.empty((len(strings), 1), dtype=object)
    for index, text in enumerate(strings):
        cells[index, 0] = np.array([text])
    return cells


def write_stanford_dogs_layout(root: str | Path, seed: int = 0, images: int = 40, objects: int = 3,
                               width: int = 96, height: int = 80, two_targets_every: int = 4,
                               train_every: int = 5) -> Path:
    """``<root>/Images/<wnid>-<name>/``, ``Annotation/`` (VOC XML without extension; every
    ``two_targets_every``-th image shows two objects of its class, both annotated) and
    ``test_list.mat`` / ``train_list.mat`` (cells file_list, annotation_list, labels 1-based)."""
    from scipy.io import savemat

    root = Path(root)
    rng = np.random.default_rng([seed, 12])
    folders = [f"n{90000001 + i:08d}-{f}" for i, f in enumerate(FOLDERS)]
    lists = {"test": ([], [], []), "train": ([], [], [])}
    for index in range(images):
        target = int(rng.integers(len(CLASSES)))
        targets = 2 if two_targets_every and index % two_targets_every == 0 else 1
        scene = _scene(rng, [target] * targets + _distractors(rng, target, objects - targets), width, height)
        wnid = folders[target].split("-")[0]
        stem = f"{wnid}_{index + 1}"
        relative = f"{folders[target]}/{stem}"
        _save_jpeg(scene.image, root / "Images" / f"{relative}.jpg")
        annotation = root / "Annotation" / relative
        annotation.parent.mkdir(parents=True, exist_ok=True)
        annotation.write_text(_voc_xml(stem, scene.image.size, FOLDERS[target],
                                       [obj.box for obj in scene.objects[:targets]]))
        files, annotations, labels = lists["train" if train_every and index % train_every == train_every - 1 else "test"]
        files.append(f"{relative}.jpg")
        annotations.append(relative)
        labels.append(target + 1)
    for split, (files, annotations, labels) in lists.items():
        savemat(str(root / f"{split}_list.mat"), {"file_list": _cells(files), "annotation_list": _cells(annotations),
                                                  "labels": np.array(labels, dtype=np.uint8)[:, None]})
    for folder in folders:  # every breed folder exists, as in the real archive
        (root / "Images" / folder).mkdir(parents=True, exist_ok=True)
        (root / "Annotation" / folder).mkdir(parents=True, exist_ok=True)
    return root


def write_imagenet_s_layout(root: str | Path, seed: int = 0, images: int = 40, objects: int = 3, width: int = 96,
                            height: int = 80, variant: str = "50", empty_mask_every: int = 0) -> Path:
    """``<root>/ImageNetS<variant>/validation/<wnid>/*.JPEG`` + ``validation-segmentation/<wnid>/*.png``
    (RGB, class id = R + 256 G: the target's pixels carry its id, a 1-px ignore border (1000) frames
    the image), ``categories.txt`` (the 20 fixture wnids, unsorted as the official files) and
    ``classnames.txt``. ``empty_mask_every``: every n-th mask lacks the class (a bad sample)."""
    root = Path(root)
    base = root / f"ImageNetS{variant}"
    rng = np.random.default_rng([seed, 13])
    wnids = [f"n{90000001 + i:08d}" for i in range(len(CLASSES))]
    for index in range(images):
        target = int(rng.integers(len(CLASSES)))
        scene = _scene(rng, [target] + _distractors(rng, target, objects - 1), width, height)
        name = f"ILSVRC2012_val_{index + 1:08d}"
        _save_jpeg(scene.image, base / "validation" / wnids[target] / f"{name}.JPEG")
        ids = np.zeros((height, width), dtype=np.int32)
        if not (empty_mask_every and index % empty_mask_every == empty_mask_every - 1):
            ids[scene.objects[0].mask] = target + 1  # class id = sorted index + 1
        ids[0, :] = ids[-1, :] = ids[:, 0] = ids[:, -1] = 1000
        rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], axis=-1).astype(np.uint8)
        path = base / "validation-segmentation" / wnids[target] / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb, "RGB").save(path)
    (root / "categories.txt").write_text("\n".join(reversed(wnids)) + "\n")  # unsorted, like the official lists
    (root / "classnames.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    return root


WATERBIRD_CLASSES = (CLASSES.index(("red", "circle")), CLASSES.index(("blue", "square")))


def write_waterbirds_layout(root: str | Path, cub_root: str | Path, seed: int = 0, images: int = 48,
                            width: int = 96, height: int = 80) -> Path:
    """``<root>/waterbird_complete95_forest2water2/metadata.csv`` + images at CUB-style paths, and the
    CUB-200-2011 files for their boxes under ``cub_root``. Two classes stand for land/water birds
    (y = 0: red circle, y = 1: blue square; ``classnames.txt``); the "place" is the spurious context:
    place = 1 when the scene also shows the other class. Blocks of 4 images (one per group) cycle through
    the splits test, test, val, train."""
    base = Path(root) / "waterbird_complete95_forest2water2"
    cub = Path(cub_root) / "CUB_200_2011"
    rng = np.random.default_rng([seed, 14])
    rows, cub_lines = [], {"images": [], "labels": [], "split": [], "boxes": []}
    for index in range(images):
        y, place = index % 2, (index // 2) % 2
        target, other = WATERBIRD_CLASSES[y], WATERBIRD_CLASSES[1 - y]
        fillers = _distractors(rng, target, 3)
        fillers = [c for c in fillers if c != other][:1]
        classes = [target] + ([other] if place else []) + fillers
        scene = _scene(rng, classes, width, height)
        folder = f"{target + 1:03d}.{FOLDERS[target]}"
        relative = f"{folder}/{FOLDERS[target].title()}_{index + 1:04d}.jpg"
        _save_jpeg(scene.image, base / relative)
        split = (2, 2, 1, 0)[(index // 4) % 4]  # blocks of the 4 groups: every split sees every group
        rows.append({"img_id": index + 1, "img_filename": relative, "y": y, "split": split, "place": place,
                     "place_filename": f"/{'o/ocean' if place else 'b/bamboo_forest'}/{index:08d}.jpg"})
        x0, y0, x1, y1 = scene.objects[0].box
        cub_lines["images"].append(f"{index + 1} {relative}")
        cub_lines["labels"].append(f"{index + 1} {target + 1}")
        cub_lines["split"].append(f"{index + 1} {int(split != 2)}")
        cub_lines["boxes"].append(f"{index + 1} {x0:.1f} {y0:.1f} {x1 - x0:.1f} {y1 - y0:.1f}")
    base.mkdir(parents=True, exist_ok=True)
    with (base / "metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cub.mkdir(parents=True, exist_ok=True)
    for name, file in (("images", "images.txt"), ("labels", "image_class_labels.txt"),
                       ("split", "train_test_split.txt"), ("boxes", "bounding_boxes.txt")):
        (cub / file).write_text("\n".join(cub_lines[name]) + "\n")
    (cub / "classes.txt").write_text("".join(f"{i + 1} {i + 1:03d}.{f}\n" for i, f in enumerate(FOLDERS)))
    (Path(root) / "classnames.txt").write_text("\n".join(CLASS_NAMES[c] for c in WATERBIRD_CLASSES) + "\n")
    return base


def _coco_scenes(root: Path, seed: int, images: int, objects: int, width: int, height: int, folder_of):
    """Scenes saved as COCO-named JPEGs (``folder_of(image_id)`` picks the 2017 folder); returns the image records
    (id, file path relative to ``root``, width, height) and the annotations of every object (xywh, label)."""
    rng = np.random.default_rng([seed, 17])
    records, annotations = [], []
    for image_id in range(1, images + 1):
        classes = [int(c) for c in rng.choice(len(CLASSES), size=objects, replace=False)]
        scene = _scene(rng, classes, width, height)
        relative = f"{folder_of(image_id)}/{image_id:012d}.jpg"
        _save_jpeg(scene.image, root / relative)
        records.append({"id": image_id, "relative": relative, "width": width, "height": height})
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            annotations.append({"image_id": image_id, "label": obj.label,
                                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]})
    return records, annotations


def _category_id(label: int) -> int:
    return 1 + label + label // 5  # ids with gaps, as COCO's (1..90 for 80 categories)


def write_coco_layout(root: str | Path, seed: int = 0, images: int = 30, objects: int = 3, width: int = 96,
                      height: int = 80, crowd_every: int = 10, tiny_every: int = 7) -> Path:
    """COCO 2017's layout: ``<root>/annotations/instances_val2017.json`` + ``<root>/val2017/<id:012d>.jpg``.
    Every object of every scene is a box; every ``crowd_every``-th image also has a crowd box (``iscrowd``),
    every ``tiny_every``-th a 3 x 3 px box; the 20 sandbox categories (ids with gaps) plus two with no box."""
    root = Path(root)
    records, boxes = _coco_scenes(root, seed, images, objects, width, height, lambda _: "val2017")
    annotations = []
    for record in records:
        if record["id"] % crowd_every == 0:
            boxes.append({"image_id": record["id"], "label": 0, "bbox": [0.0, 0.0, 40.0, 30.0], "iscrowd": 1})
        if record["id"] % tiny_every == 0:
            boxes.append({"image_id": record["id"], "label": 1, "bbox": [5.0, 5.0, 3.0, 3.0]})
    for number, obj in enumerate(boxes, 1):
        x, y, w, h = obj["bbox"]
        annotations.append({"id": 1000 + number, "image_id": obj["image_id"], "category_id": _category_id(obj["label"]),
                            "bbox": obj["bbox"], "area": w * h, "iscrowd": obj.get("iscrowd", 0),
                            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    categories = [{"id": _category_id(label), "name": name, "supercategory": "shape"}
                  for label, name in enumerate(CLASS_NAMES)]
    categories += [{"id": 200, "name": "orange star", "supercategory": "shape"},
                   {"id": 201, "name": "black ring", "supercategory": "shape"}]
    instances = {"info": {"description": "sandbox scenes in COCO 2017's layout"}, "licenses": [],
                 "images": [{"id": r["id"], "file_name": Path(r["relative"]).name, "width": r["width"],
                             "height": r["height"], "coco_url": f"http://images.cocodataset.org/{r['relative']}"}
                            for r in records],
                 "annotations": annotations, "categories": categories}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(instances))
    return root


def write_lvis_layout(root: str | Path, seed: int = 1, images: int = 30, objects: int = 3, width: int = 96,
                      height: int = 80, train_every: int = 3) -> Path:
    """LVIS v1's layout: ``<root>/lvis_v1_val.json`` naming images by ``coco_url`` only (every
    ``train_every``-th under ``train2017/``, the rest under ``val2017/``), categories with ``synonyms``
    (underscored) and a ``frequency`` (r / c / f in turn), plus one category with no box; no crowd boxes."""
    root = Path(root)
    records, boxes = _coco_scenes(root, seed, images, objects, width, height,
                                  lambda image_id: "train2017" if image_id % train_every == 0 else "val2017")
    annotations = [{"id": number, "image_id": obj["image_id"], "category_id": _category_id(obj["label"]),
                    "bbox": obj["bbox"], "area": obj["bbox"][2] * obj["bbox"][3]}
                   for number, obj in enumerate(boxes, 1)]
    categories = [{"id": _category_id(label), "name": name.replace(" ", "_"), "synonyms": [name.replace(" ", "_")],
                   "frequency": "rcf"[label % 3], "def": f"a {name} drawn on noise", "synset": f"{FOLDERS[label]}.n.01",
                   "image_count": 0, "instance_count": 0} for label, name in enumerate(CLASS_NAMES)]
    categories.append({"id": 300, "name": "orange_star", "synonyms": ["orange_star"], "frequency": "r", "def": "",
                       "synset": "orange_star.n.01", "image_count": 0, "instance_count": 0})
    lvis = {"info": {"description": "sandbox scenes in LVIS v1's layout"}, "licenses": [],
            "images": [{"id": r["id"], "coco_url": f"http://images.cocodataset.org/{r['relative']}",
                        "width": r["width"], "height": r["height"], "neg_category_ids": [],
                        "not_exhaustive_category_ids": []} for r in records],
            "annotations": annotations, "categories": categories}
    (root / "lvis_v1_val.json").write_text(json.dumps(lvis))
    return root
