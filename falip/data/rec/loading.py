"""One entry point for REC data: pick the layout (refer / ReCLIP jsonl / HF), check the split, load it."""
from __future__ import annotations

from pathlib import Path

from ...errors import DatasetError
from .detections import load_detections, with_detections
from .hf import load_hf_split
from .reclip import load_reclip_split
from .refer import DEFAULT_SPLIT_BY, default_image_dir, load_refer_split
from .types import RecSplit, without_zero_area

LAYOUTS = ("auto", "refer", "reclip", "hf")
KNOWN_SPLITS = {"refcoco": ("train", "val", "testA", "testB"), "refcoco+": ("train", "val", "testA", "testB"),
                "refcocog": ("train", "val", "test")}

HOW_TO_GET = """Expected one of:
  refer layout (dataset.layout=refer):            ReCLIP jsonl (dataset.layout=reclip):
    <root>/refcoco/instances.json, refs(unc).p      <root>/refcoco_val.jsonl, refcoco_testa.jsonl, ...
    <root>/refcoco+/instances.json, refs(unc).p     <root>/refcoco+_testa.jsonl, refcocog_test.jsonl, ...
    <root>/refcocog/instances.json, refs(umd).p     + dataset.image_dir=<COCO train2014>
    <root>/images/mscoco/images/train2014/*.jpg
Get the refs + instances with the refer toolkit's downloads (github.com/lichengunc/refer), the images from
http://images.cocodataset.org/zips/train2014.zip, or ReCLIP's files with
`gsutil cp gs://reclip-sanjays/reclip_data.tar.gz .`; then set dataset.root=<dir> (and dataset.image_dir=...).
A HF variant can be used with dataset.layout=hf dataset.hf_id=<id> (see docs/datasets.md)."""


def detect_layout(name: str, root: str | Path | None, hf_id: str | None) -> str:
    if root is not None and (Path(root) / name / "instances.json").is_file():
        return "refer"
    if root is not None and any(Path(root).glob(f"{name}_*.jsonl")):
        return "reclip"
    if hf_id:
        return "hf"
    where = f"dataset.root={root}" if root else "dataset.root is not set"
    raise DatasetError(f"no {name} data found ({where}).\n{HOW_TO_GET}")


def check_split(name: str, split: str, split_by: str | None) -> None:
    if name in KNOWN_SPLITS and (split_by is None or split_by == DEFAULT_SPLIT_BY[name]):
        if split not in KNOWN_SPLITS[name]:
            raise DatasetError(f"{name} has no split {split!r}; valid: {list(KNOWN_SPLITS[name])}")


def resolve_rec_source(name: str, split: str, *, root: str | Path | None = None, layout: str = "auto",
                       image_dir: str | Path | None = None, split_by: str | None = None,
                       hf_id: str | None = None) -> tuple[str, Path | None]:
    """The cheap checks, no file parsed: split name, layout (found when ``auto``), folders.

    Returns ``(layout, image_dir)``; raises :class:`DatasetError` saying what is missing and how to get it.
    Runs before the model is loaded, so a missing dataset is reported at once.
    """
    if layout not in LAYOUTS:
        raise DatasetError(f"dataset.layout must be one of {LAYOUTS}, got {layout!r}")
    check_split(name, split, split_by)
    if layout == "auto":
        layout = detect_layout(name, root, hf_id)
    if layout in ("refer", "reclip") and (root is None or not Path(root).is_dir()):
        raise DatasetError(f"dataset.root {root} is not a directory.\n{HOW_TO_GET}")
    if layout == "hf" and not hf_id:
        raise DatasetError("dataset.layout=hf needs dataset.hf_id (a HF datasets id or local folder)")
    if layout == "refer":
        image_dir = Path(image_dir) if image_dir else default_image_dir(root)
    if image_dir is not None and not Path(image_dir).is_dir():
        raise DatasetError(f"image folder {image_dir} does not exist: set dataset.image_dir to the COCO train2014 "
                           f"images (http://images.cocodataset.org/zips/train2014.zip)")
    return layout, Path(image_dir) if image_dir is not None else None


def load_rec_split(name: str, split: str, *, root: str | Path | None = None, layout: str = "auto",
                   image_dir: str | Path | None = None, split_by: str | None = None, hf_id: str | None = None,
                   detections: str | Path | None = None) -> RecSplit:
    """A REC split from whichever layout the config names (or finds), with detections if given."""
    layout, image_dir = resolve_rec_source(name, split, root=root, layout=layout, image_dir=image_dir,
                                           split_by=split_by, hf_id=hf_id)
    if layout == "refer":
        split_data = load_refer_split(root, name, split, split_by=split_by, image_dir=image_dir)
    elif layout == "reclip":
        split_data = load_reclip_split(root, name, split, image_dir=image_dir)
    else:
        split_data = load_hf_split(hf_id, split, image_dir=image_dir)
    if detections:
        split_data = with_detections(split_data, load_detections(detections), str(detections))
    return without_zero_area(split_data)
