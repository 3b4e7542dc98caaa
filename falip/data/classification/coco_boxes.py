"""Box classification on COCO and LVIS: classify every ground-truth box of the val set among all categories.

Layouts (the official files; docs/datasets.md)::

    COCO 2017: <root>/annotations/instances_val2017.json   images: <root>/val2017/<file_name>
    LVIS v1:   <root>/lvis_v1_val.json (or <root>/annotations/lvis_v1_val.json), images under the COCO 2017
               folders of <root> (or dataset.image_dir): LVIS names an image by its ``coco_url``
               (``.../val2017/000000397133.jpg`` or ``.../train2017/...``), whose last two parts are its path

Both are read with pycocotools (:func:`falip.data.coco.load_coco`, with the shape checks and the paths kept
inside the image root). Every annotation is one sample: its ``bbox`` (``[x, y, w, h]``) is the region of
attention, its category the label (categories in id order; COCO's ``name``, LVIS's first synonym with
underscores as spaces -- ``dataset.classnames`` overrides). Excluded and counted in the split's notes: crowd
boxes (``iscrowd``), boxes of zero area, and boxes under ``dataset.min_area`` pixels (``w * h``). Categories
with no box stay classes (the classifier covers every category). LVIS categories carry their ``frequency``
(``r``/``c``/``f``): each sample's group, so ``task.metrics=[groups]`` reports rare/common/frequent accuracy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ...errors import DatasetError
from ..coco import image_in_root, load_coco
from .types import ClassificationSample, ClassificationSplit

FREQUENCIES = ("r", "c", "f")
FREQUENCY_NAMES = ["rare", "common", "frequent"]


def coco_annotation_file(root: str | Path, split: str, flavor: str, annotations: str | None = None) -> Path:
    """The instances file of ``split``: ``annotations`` when given, else the official name under ``root``."""
    if annotations:
        return Path(annotations)
    root = Path(root)
    if flavor == "lvis":
        candidates = [root / f"lvis_v1_{split}.json", root / "annotations" / f"lvis_v1_{split}.json"]
    else:
        candidates = [root / "annotations" / f"instances_{split}.json"]
    return next((path for path in candidates if path.is_file()), candidates[0])


def check_coco_boxes(root: str | Path, splits: Sequence[str], flavor: str, annotations: str | None = None,
                     image_dir: str | None = None) -> None:
    """The cheap checks (nothing parsed): the root, each split's annotation file, the image folder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{flavor.upper()} root {root} does not exist (dataset.root)")
    for split in splits:
        path = coco_annotation_file(root, split, flavor, annotations)
        if not path.is_file():
            official = ("lvis_v1_val.json from https://www.lvisdataset.org/dataset" if flavor == "lvis" else
                        "annotations/instances_val2017.json from https://cocodataset.org/#download")
            raise DatasetError(f"split {split!r}: {path} not found (dataset.root={root}; expected {official}, or "
                               f"dataset.annotations=<file>)")
    images = Path(image_dir) if image_dir else root
    if not images.is_dir():
        raise DatasetError(f"image folder {images} does not exist (dataset.image_dir)")


def _class_name(category: dict, flavor: str) -> str:
    if flavor == "lvis":
        synonyms = category.get("synonyms") or [category.get("name", "")]
        return str(synonyms[0]).replace("_", " ")
    return str(category.get("name", ""))


def load_coco_box_split(root: str | Path, split: str = "val2017", flavor: str = "coco", name: str | None = None,
                        annotations: str | None = None, image_dir: str | None = None,
                        min_area: float = 0.0) -> ClassificationSplit:
    """Every usable ground-truth box of ``split`` as a sample (see the module docstring)."""
    if flavor not in ("coco", "lvis"):
        raise DatasetError(f"flavor {flavor!r} is not one of coco, lvis")
    root = Path(root)
    path = coco_annotation_file(root, split, flavor, annotations)
    if not path.is_file():
        check_coco_boxes(root, [split], flavor, annotations, image_dir)
    coco = load_coco(path, file_names_from_url=(flavor == "lvis"))
    images_root = Path(image_dir) if image_dir else (root if flavor == "lvis" else root / split)
    categories = sorted(coco.dataset.get("categories") or [], key=lambda category: category["id"])
    if not categories:
        raise DatasetError(f"{path} lists no categories")
    label_of = {category["id"]: index for index, category in enumerate(categories)}
    classes = [_class_name(category, flavor) for category in categories]
    group_of: dict[int, int] = {}
    if flavor == "lvis":
        for category in categories:
            frequency = category.get("frequency")
            if frequency not in FREQUENCIES:
                raise DatasetError(f"{path}: category {category['id']} has frequency {frequency!r}, expected r, c or f")
            group_of[category["id"]] = FREQUENCIES.index(frequency)
    samples, crowd, empty, small = [], 0, 0, 0
    for number, annotation in enumerate(coco.dataset.get("annotations") or []):
        where = f"{path}: annotations[{number}]"
        try:
            x, y, w, h = (float(value) for value in annotation["bbox"])
            category, image_id = annotation["category_id"], annotation["image_id"]
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(f"{where} is malformed ({type(error).__name__}: {error}); need bbox [x, y, w, h], "
                               f"category_id, image_id") from None
        if category not in label_of:
            raise DatasetError(f"{where} has category_id {category}, which the file's categories do not list")
        if image_id not in coco.imgs:
            raise DatasetError(f"{where} has image_id {image_id}, which the file's images do not list")
        if annotation.get("iscrowd"):
            crowd += 1
            continue
        if w <= 0 or h <= 0:
            empty += 1
            continue
        if w * h < min_area:
            small += 1
            continue
        image = coco.imgs[image_id]
        image_path = image_in_root(images_root, image["file_name"], f"{path}: image {image_id}")
        samples.append(ClassificationSample(str(annotation.get("id", number)), image_path, (x, y, x + w, y + h),
                                            label_of[category], group=group_of.get(category)))
    if not samples:
        raise DatasetError(f"{path} has no usable box ({crowd} crowd, {empty} of zero area, {small} under "
                           f"dataset.min_area={min_area})")
    present = len({sample.label for sample in samples})
    notes = [f"{len(samples)} boxes of {present} of the {len(classes)} categories (the others stay classes)",
             f"excluded: {crowd} crowd boxes, {empty} boxes of zero area, {small} boxes under "
             f"dataset.min_area={min_area:g} px"]
    return ClassificationSplit(name or flavor, split, classes, samples, source=str(path), notes=notes,
                               group_names=FREQUENCY_NAMES if flavor == "lvis" else None)
