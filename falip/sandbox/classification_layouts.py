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
