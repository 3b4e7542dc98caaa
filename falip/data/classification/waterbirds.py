"""Waterbirds (``waterbird_complete95_forest2water2``, Sagawa et al. 2020; kohpangwei/group_DRO).

::

    waterbird_complete95_forest2water2/metadata.csv     img_id,img_filename,y,split,place,place_filename
    waterbird_complete95_forest2water2/<NNN.Class>/<file>.jpg   (CUB's paths: a CUB bird on a Places background)

``split``: 0 = train, 1 = val, 2 = test (the zero-shot split, 5,794 images); ``y``: 0 = landbird,
1 = waterbird; ``place``: 0 = land, 1 = water; group = ``2 y + place``. The bird is pasted at its
original place, so the ROA is the CUB box of the same ``img_filename`` (``dataset.cub_root``; inferred).
"""
from __future__ import annotations

import csv
from pathlib import Path

from ...errors import DatasetError
from ..folders import first_folder
from .cub import cub_boxes
from ..coco import image_in_root
from .types import ClassificationSample, ClassificationSplit

FOLDER = "waterbird_complete95_forest2water2"
SPLITS = {"train": 0, "val": 1, "test": 2}
CLASSES = ["landbird", "waterbird"]
GROUPS = ["landbird on land", "landbird on water", "waterbird on land", "waterbird on water"]
COLUMNS = ("img_id", "img_filename", "y", "split", "place")
HOW_TO_GET = ("Get waterbird_complete95_forest2water2.tar.gz (https://nlp.stanford.edu/data/dro/"
              "waterbird_complete95_forest2water2.tar.gz, or WILDS' waterbirds_v1.0) and set dataset.root to it "
              "(or its parent); the boxes come from CUB-200-2011: set dataset.cub_root.")


def waterbirds_root(root: str | Path) -> Path:
    root = Path(root)
    found = first_folder((root, root / FOLDER), lambda folder: (folder / "metadata.csv").is_file())
    if found is not None:
        return found
    raise DatasetError(f"dataset.root={root} holds no Waterbirds metadata.csv (nor {root / FOLDER}/metadata.csv). "
                       f"{HOW_TO_GET}")


def check_waterbirds(root: str | Path, splits, cub_root: str | Path | None) -> None:
    waterbirds_root(root)
    for split in splits:
        if split not in SPLITS:
            raise DatasetError(f"Waterbirds has no split {split!r}; valid: {list(SPLITS)}")
    if not cub_root:
        raise DatasetError("Waterbirds needs the CUB-200-2011 boxes: set dataset.cub_root=<CUB_200_2011 or its parent>")


def load_waterbirds_split(root: str | Path, split: str, cub_root: str | Path) -> ClassificationSplit:
    """One split of Waterbirds: image, its CUB box, label (land/water bird) and group (label x place)."""
    check_waterbirds(root, [split], cub_root)
    root = waterbirds_root(root)
    boxes = cub_boxes(cub_root)
    path = root / "metadata.csv"
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path} lacks column(s) {missing}; expected header {','.join(COLUMNS)},place_filename")
        samples = []
        for number, row in enumerate(reader, 2):
            try:
                y, row_split, place = int(row["y"]), int(row["split"]), int(row["place"])
            except ValueError:
                raise DatasetError(f"{path}:{number}: y, split and place must be integers, got {row}") from None
            if row_split != SPLITS[split]:
                continue
            if y not in (0, 1) or place not in (0, 1):
                raise DatasetError(f"{path}:{number}: y and place must be 0 or 1, got y={y}, place={place}")
            name = row["img_filename"]
            image = image_in_root(root, name, f"{path}:{number}: img_filename")
            if name not in boxes:
                raise DatasetError(f"{path}:{number}: {name} has no box in CUB's bounding_boxes.txt "
                                   f"(dataset.cub_root={cub_root})")
            samples.append(ClassificationSample(row["img_id"], image, boxes[name], y, group=2 * y + place))
    if not samples:
        raise DatasetError(f"{path} has no row with split={SPLITS[split]} ({split})")
    return ClassificationSplit("waterbirds", split, list(CLASSES), samples, source=f"{path}; boxes from {cub_root}",
                               group_names=list(GROUPS))
