"""Stanford Dogs in its official layout (http://vision.stanford.edu/aditya86/ImageNetDogs/).

::

    <root>/Images/<wnid>-<Breed_Name>/<wnid>_<n>.jpg
    <root>/Annotation/<wnid>-<Breed_Name>/<wnid>_<n>      VOC-like XML, no extension, one or more <object>s
    <root>/test_list.mat, train_list.mat                   MATLAB cells: file_list, annotation_list, labels (1-based)

Splits ``test`` (8,580 images, the zero-shot split) and ``train``. Labels = ``labels - 1`` (class
order = the sorted breed folders); class names = the folder name after its first ``-`` with ``_`` as
spaces (``n02089078-black-and-tan_coonhound`` -> ``black-and-tan coonhound``; inferred). The ROA is
every ``<object>``'s box of the annotation (several dogs = one ROA), used as stored (xmin, ymin,
xmax, ymax).
"""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

from ...errors import DatasetError
from ...geometry import Region
from .types import ClassificationSample, ClassificationSplit

SPLITS = ("test", "train")
HOW_TO_GET = ("Get images.tar, annotation.tar and lists.tar from http://vision.stanford.edu/aditya86/ImageNetDogs/, "
              "extract all three into one folder (Images/, Annotation/, test_list.mat ...) and set dataset.root to it.")


def class_name(folder: str) -> str:
    return folder.split("-", 1)[-1].replace("_", " ")


def _cell_strings(value, path: Path, key: str) -> list[str]:
    import numpy as np

    array = np.asarray(value).ravel()
    out = []
    for item in array:
        while isinstance(item, np.ndarray):
            if item.size != 1:
                raise DatasetError(f"{path}: '{key}' holds a cell with {item.size} entries, expected one string")
            item = item.ravel()[0]
        out.append(str(item))
    return out


def read_split_list(path: Path) -> list[tuple[str, str, int]]:
    """``(file under Images/, annotation under Annotation/, label 1-based)`` per image of a ``*_list.mat``."""
    from scipy.io import loadmat

    if not path.is_file():
        raise DatasetError(f"{path} not found. {HOW_TO_GET}")
    try:
        data = loadmat(str(path))
    except Exception as error:  # scipy raises several types for a corrupt file
        raise DatasetError(f"{path} is not a readable MATLAB file: {type(error).__name__}: {error}") from None
    missing = [key for key in ("file_list", "annotation_list", "labels") if key not in data]
    if missing:
        raise DatasetError(f"{path} lacks variable(s) {missing} (has {sorted(k for k in data if not k.startswith('__'))})")
    files = _cell_strings(data["file_list"], path, "file_list")
    annotations = _cell_strings(data["annotation_list"], path, "annotation_list")
    labels = [int(v) for v in data["labels"].ravel()]
    if not len(files) == len(annotations) == len(labels):
        raise DatasetError(f"{path}: file_list, annotation_list and labels differ in length "
                           f"({len(files)}, {len(annotations)}, {len(labels)})")
    return list(zip(files, annotations, labels))


def read_annotation(path: Path) -> tuple[Region, tuple[int, int] | None]:
    """Every ``<object>``'s box of a VOC-like annotation as one region, and the ``<size>`` (W, H) if given."""
    if not path.is_file():
        raise DatasetError(f"annotation {path} not found (Stanford Dogs stores it without extension under Annotation/)")
    try:
        tree = ElementTree.parse(path).getroot()
        boxes = []
        for obj in tree.iter("object"):
            box = obj.find("bndbox")
            boxes.append(tuple(float(box.find(key).text) for key in ("xmin", "ymin", "xmax", "ymax")))
        size = tree.find("size")
        wh = (int(size.find("width").text), int(size.find("height").text)) if size is not None else None
    except (ElementTree.ParseError, AttributeError, TypeError, ValueError) as error:
        raise DatasetError(f"annotation {path} is not a VOC-style XML with <object><bndbox> "
                           f"xmin/ymin/xmax/ymax ({type(error).__name__}: {error})") from None
    if not boxes:
        raise DatasetError(f"annotation {path} has no <object>")
    return Region(tuple(boxes)), wh


def check_stanford_dogs(root: str | Path, splits) -> None:
    root = Path(root)
    for split in splits:
        if split not in SPLITS:
            raise DatasetError(f"Stanford Dogs has no split {split!r}; valid: {list(SPLITS)}")
    for needed in ["Images", "Annotation"] + [f"{split}_list.mat" for split in splits]:
        if not (root / needed).exists():
            raise DatasetError(f"{root / needed} not found (dataset.root={root}). {HOW_TO_GET}")


def load_stanford_dogs_split(root: str | Path, split: str) -> ClassificationSplit:
    """One split of Stanford Dogs: image, every annotated box as one ROA, label."""
    root = Path(root)
    check_stanford_dogs(root, [split])
    folders = sorted(p.name for p in (root / "Images").iterdir() if p.is_dir())
    classes = [class_name(folder) for folder in folders]
    samples = []
    for file_name, annotation, label in read_split_list(root / f"{split}_list.mat"):
        if not 1 <= label <= len(classes):
            raise DatasetError(f"{root / f'{split}_list.mat'}: label {label} of {file_name} is not in 1..{len(classes)}")
        region, _ = read_annotation(root / "Annotation" / annotation)
        samples.append(ClassificationSample(Path(file_name).stem, root / "Images" / file_name, region, label - 1))
    if not samples:
        raise DatasetError(f"{root / f'{split}_list.mat'} lists no image")
    return ClassificationSplit("stanford_dogs", split, classes, samples, source=str(root))
