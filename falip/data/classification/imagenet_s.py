"""ImageNet-S (LUSSeg/ImageNet-S: ImageNet with segmentation masks), validation split, variants 919 / 300 / 50.

::

    <root>/ImageNetS<variant>/validation/<wnid>/<ImageNet val name>.JPEG
    <root>/ImageNetS<variant>/validation-segmentation/<wnid>/<same stem>.png

A mask PNG is RGB with class id = R + 256 G (0 = background, 1000 = ignore); ids are 1-based
indices into the variant's *sorted* wnids (shipped with this package: ``resources/imagenet_s<v>_wnids.txt``,
or ``dataset.categories=<txt>`` for another list). Label = that index - 1. Class names: CLIP's curated
ImageNet names by default (``dataset.classnames=clip``, ``resources/imagenet_clip_classnames.tsv``: what
CLIP_benchmark and most zero-shot work use; distinct over S919/S300/S50), or the first WordNet lemma
(``dataset.classnames=wordnet``, ``resources/imagenet_lemmas.tsv``; S919 has ``crane`` twice, the bird
n02012849 and the machine n03126707, so that list is refused there unless ``dataset.allow_duplicate_names``),
or that lemma with underscores for spaces (``dataset.classnames=alphaclip``: Alpha-CLIP's evaluation code names
classes ``nltk`` ``synset.lemmas()[0].name()``, e.g. ``great_white_shark``), or a txt / list of your own.
ROA = the box around the pixels of the image's class (``roa=box``, default), or those pixels
themselves (``roa=mask``: the tokens they cover; inferred, both documented). An image whose mask has
no pixel of its class is marked unusable (an error, or a recorded skip).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import DatasetError
from ..folders import first_folder
from ...geometry import Region
from .types import ClassificationSample, ClassificationSplit

RESOURCES = Path(__file__).resolve().parent / "resources"
VARIANTS = ("919", "300", "50")
SPLITS = ("validation",)
ROA_KINDS = ("box", "mask")
NAME_LISTS = ("clip", "wordnet", "alphaclip")  # dataset.classnames values that pick a shipped list
IGNORE = 1000
HOW_TO_GET = ("Build ImageNet-S from your ImageNet-1k copy with the LUSSeg/ImageNet-S data preparation scripts "
              "(https://github.com/LUSSeg/ImageNet-S: datapreparation_val.sh + the ImageNetS<variant> annotation zip) "
              "and set dataset.root to the folder holding ImageNetS<variant>/.")


def read_list(path: Path) -> list[str]:
    """Non-empty, non-comment lines of a text file."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def wnids(variant: str, categories: str | Path | None = None) -> list[str]:
    """The variant's wnids in label order (sorted), from ``categories`` or the shipped list."""
    path = Path(categories) if categories else RESOURCES / f"imagenet_s{variant}_wnids.txt"
    if not path.is_file():
        raise DatasetError(f"ImageNet-S category list {path} not found (dataset.categories)")
    return sorted(read_list(path))


def first_lemmas() -> dict[str, str]:
    rows = (line.split("\t", 1) for line in read_list(RESOURCES / "imagenet_lemmas.tsv"))
    return {wnid: lemmas.split(",")[0].strip() for wnid, lemmas in rows}


def clip_names() -> dict[str, str]:
    """wnid -> CLIP's curated ImageNet class name."""
    rows = (line.split("\t", 1) for line in read_list(RESOURCES / "imagenet_clip_classnames.tsv"))
    return {wnid: name.strip() for wnid, name in rows}


def name_list(value: object) -> str:
    """Which shipped list ``dataset.classnames`` picks: ``wordnet`` or ``alphaclip`` when it says so, else ``clip``
    (the default; a txt or a list given there replaces the names afterwards)."""
    return value if value in ("wordnet", "alphaclip") else "clip"


def class_names(wnid_list: list[str], names: str = "clip") -> list[str]:
    """The names of ``wnid_list`` from the shipped list ``names`` (a wnid it does not know keeps its wnid)."""
    if names not in NAME_LISTS:
        raise DatasetError(f"dataset.classnames={names!r}: expected one of {list(NAME_LISTS)}, a txt or a list")
    table = clip_names() if names == "clip" else first_lemmas()
    named = [table.get(wnid, wnid) for wnid in wnid_list]
    return [name.replace(" ", "_") for name in named] if names == "alphaclip" else named


def decode_mask(path: Path) -> np.ndarray:
    """ImageNet-S class ids ``(H, W)`` int of a segmentation PNG: R + 256 G."""
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1]


@dataclass(frozen=True)
class ClassMask:
    """The pixels of one class in a segmentation PNG, read when a region needs them (numpy reads it via
    ``__array__``), so that thousands of masks are not held in memory."""

    path: Path
    class_id: int

    def __array__(self, dtype=None, copy=None):
        mask = decode_mask(self.path) == self.class_id
        return mask if dtype is None else mask.astype(dtype)


def variant_root(root: str | Path, variant: str) -> Path:
    root = Path(root)
    found = first_folder((root / f"ImageNetS{variant}", root), lambda folder: (
        (folder / "validation").is_dir() and (folder / "validation-segmentation").is_dir()))
    if found is not None:
        return found
    raise DatasetError(f"dataset.root={root} holds no ImageNetS{variant}/validation and validation-segmentation. "
                       f"{HOW_TO_GET}")


def check_imagenet_s(root: str | Path, splits, variant: str = "919", roa: str = "box") -> None:
    if str(variant) not in VARIANTS:
        raise DatasetError(f"dataset.variant={variant!r} is not an ImageNet-S variant; valid: {list(VARIANTS)}")
    if roa not in ROA_KINDS:
        raise DatasetError(f"dataset.roa={roa!r} is not valid; valid: {list(ROA_KINDS)}")
    for split in splits:
        if split not in SPLITS:
            raise DatasetError(f"ImageNet-S is evaluated on {list(SPLITS)} (test masks are not public), not {split!r}")
    variant_root(root, str(variant))


def load_imagenet_s_split(root: str | Path, split: str, variant: str = "919", roa: str = "box",
                          categories: str | Path | None = None, names: str = "clip") -> ClassificationSplit:
    """The validation images of one variant with the box (or mask) of their class's pixels as ROA."""
    variant = str(variant)
    check_imagenet_s(root, [split], variant, roa)
    base = variant_root(root, variant)
    classes_wnids = wnids(variant, categories)
    index = {wnid: position for position, wnid in enumerate(classes_wnids)}
    classes = class_names(classes_wnids, names)
    samples, problems = [], 0
    for folder in sorted(p for p in (base / split).iterdir() if p.is_dir()):
        if folder.name not in index:
            raise DatasetError(f"{folder}: {folder.name} is not a class of ImageNet-S{variant} "
                               f"(dataset.variant / dataset.categories)")
        label = index[folder.name]
        for image_path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png")):
            mask_path = base / f"{split}-segmentation" / folder.name / (image_path.stem + ".png")
            if not mask_path.is_file():
                raise DatasetError(f"{mask_path} not found: every image of {base / split} needs its mask")
            ids = decode_mask(mask_path)
            with Image.open(image_path) as image:  # the header only: no decode
                size = image.size
            if (ids.shape[1], ids.shape[0]) != size:
                problems += 1
                samples.append(ClassificationSample(image_path.stem, image_path, (0.0, 0.0, 1.0, 1.0), label,
                                                    problem=f"mask {mask_path} is {ids.shape[1]}x{ids.shape[0]} but its "
                                                            f"image is {size[0]}x{size[1]}: the region would land in the "
                                                            f"wrong place"))
                continue
            ys, xs = np.nonzero(ids == label + 1)
            if not len(xs):
                problems += 1
                samples.append(ClassificationSample(image_path.stem, image_path, (0.0, 0.0, 1.0, 1.0), label,
                                                    problem=f"mask {mask_path} has no pixel of the image's class "
                                                            f"(id {label + 1}, {folder.name})"))
                continue
            box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            mask = ClassMask(mask_path, label + 1) if roa == "mask" else None
            samples.append(ClassificationSample(image_path.stem, image_path, Region((box,), mask), label))
    if not samples:
        raise DatasetError(f"{base / split} has no images")
    notes = [f"{problems} image(s) whose mask has no pixel of their class or is not the image's size"] if problems else []
    notes.append(f"class names: {'CLIP curated ImageNet names' if names == 'clip' else 'first WordNet lemmas'}")
    return ClassificationSplit(f"imagenet_s{variant}", split, classes, samples, source=str(base), notes=notes)
