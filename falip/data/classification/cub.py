"""CUB-200-2011 in its official layout (Caltech-UCSD Birds; https://www.vision.caltech.edu/datasets/cub_200_2011/).

::

    CUB_200_2011/images/<NNN.Class_Name>/<file>.jpg
    CUB_200_2011/images.txt               <image_id> <path under images/>
    CUB_200_2011/image_class_labels.txt   <image_id> <class_id 1..200>
    CUB_200_2011/classes.txt              <class_id> <NNN.Class_Name>
    CUB_200_2011/train_test_split.txt     <image_id> <1 = train, 0 = test>
    CUB_200_2011/bounding_boxes.txt       <image_id> <x> <y> <width> <height>   (floats, pixels)

``dataset.root`` is ``CUB_200_2011/`` or its parent. Splits: ``test`` (5,794 images, the zero-shot
split) and ``train``. Labels are ``class_id - 1``; class names drop the ``NNN.`` prefix and turn
``_`` into spaces (inferred convention). The ROA is the image's one box.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import DatasetError
from ..folders import first_folder
from ...geometry import Box, xywh_to_xyxy
from ..coco import image_in_root
from .types import ClassificationSample, ClassificationSplit

FILES = ("images.txt", "image_class_labels.txt", "classes.txt", "train_test_split.txt", "bounding_boxes.txt")
SPLITS = {"train": "1", "test": "0"}
HOW_TO_GET = ("Get CUB_200_2011.tgz from https://data.caltech.edu/records/65de6-vp158 (Caltech-UCSD Birds-200-2011), "
              "extract it, and set dataset.root to CUB_200_2011/ or its parent.")


def cub_root(root: str | Path) -> Path:
    """The folder holding images.txt: ``root`` itself or ``root/CUB_200_2011``."""
    root = Path(root)
    found = first_folder((root, root / "CUB_200_2011"), lambda folder: (folder / "images.txt").is_file())
    if found is not None:
        return found
    raise DatasetError(f"dataset.root={root} holds no CUB-200-2011 (expected {root}/images.txt or "
                       f"{root}/CUB_200_2011/images.txt with {', '.join(FILES)}). {HOW_TO_GET}")


def _table(path: Path, width: int) -> dict[str, list[str]]:
    """``<id> <fields...>`` lines -> {id: fields}; a malformed line names the file and line."""
    if not path.is_file():
        raise DatasetError(f"{path} not found: CUB-200-2011 needs {', '.join(FILES)}. {HOW_TO_GET}")
    table = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=width)
        if len(fields) != width + 1:
            raise DatasetError(f"{path}:{number}: expected an id and {width} field(s), got {line!r}")
        table[fields[0]] = fields[1:]
    return table


def class_name(folder: str) -> str:
    """``001.Black_footed_Albatross`` -> ``Black footed Albatross``."""
    return folder.split(".", 1)[-1].replace("_", " ")


def cub_boxes(root: str | Path) -> dict[str, Box]:
    """Every image's box (xyxy) by its path under images/ (Waterbirds matches its images by that path)."""
    root = cub_root(root)
    paths = _table(root / "images.txt", 1)
    boxes = _table(root / "bounding_boxes.txt", 4)
    out = {}
    for image_id, (path,) in paths.items():
        if image_id not in boxes:
            raise DatasetError(f"{root / 'bounding_boxes.txt'} has no box for image {image_id} ({path})")
        try:
            out[path] = xywh_to_xyxy([float(v) for v in boxes[image_id]])
        except ValueError:
            raise DatasetError(f"{root / 'bounding_boxes.txt'}: image {image_id} has a malformed box "
                               f"{boxes[image_id]}") from None
    return out


def check_cub(root: str | Path, splits) -> None:
    root = cub_root(root)
    for name in FILES:
        if not (root / name).is_file():
            raise DatasetError(f"{root / name} not found: CUB-200-2011 needs {', '.join(FILES)}. {HOW_TO_GET}")
    for split in splits:
        if split not in SPLITS:
            raise DatasetError(f"CUB-200-2011 has no split {split!r}; valid: {list(SPLITS)}")


def load_cub_split(root: str | Path, split: str) -> ClassificationSplit:
    """One split of CUB-200-2011 (``test`` or ``train``): image, box, label."""
    if split not in SPLITS:
        raise DatasetError(f"CUB-200-2011 has no split {split!r}; valid: {list(SPLITS)}")
    root = cub_root(root)
    paths = _table(root / "images.txt", 1)
    labels = _table(root / "image_class_labels.txt", 1)
    classes_table = _table(root / "classes.txt", 1)
    split_table = _table(root / "train_test_split.txt", 1)
    boxes = cub_boxes(root)
    class_ids = sorted(classes_table, key=int)
    if [int(i) for i in class_ids] != list(range(1, len(class_ids) + 1)):
        raise DatasetError(f"{root / 'classes.txt'}: class ids must be 1..N, got {class_ids[:5]}...")
    classes = [class_name(classes_table[i][0]) for i in class_ids]
    samples = []
    for image_id in sorted(paths, key=int):
        if split_table.get(image_id, [None])[0] != SPLITS[split]:
            continue
        if image_id not in labels:
            raise DatasetError(f"{root / 'image_class_labels.txt'} has no label for image {image_id}")
        label = int(labels[image_id][0]) - 1
        if not 0 <= label < len(classes):
            raise DatasetError(f"{root / 'image_class_labels.txt'}: image {image_id} has class {label + 1}, "
                               f"not in 1..{len(classes)}")
        path = paths[image_id][0]
        image = image_in_root(root / "images", path, f"{root / 'images.txt'}: image {image_id}")
        samples.append(ClassificationSample(image_id, image, boxes[path], label))
    if not samples:
        raise DatasetError(f"{root / 'train_test_split.txt'} puts no image in split {split!r}")
    return ClassificationSplit("cub", split, classes, samples, source=str(root))
