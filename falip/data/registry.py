"""``dataset.format`` -> how to load a split of it and how to check it before the model loads.

Every dataset an experiment can name is one entry of :data:`FORMATS`; a new dataset family is a loader
module under ``falip/data/<task family>/`` plus one entry here. The loaders read real on-disk layouts
only: generated data (the sandbox) is written to disk first by the experiment runner.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import ConfigError, DatasetError
from .classification import cub, imagenet_s, stanford_dogs, waterbirds
from .classnames import check_distinct, class_names_from
from .classification.boxes import check_box_classification_root, load_box_classification_split
from .classification.coco_boxes import check_coco_boxes, load_coco_box_split
from .classification.cub import check_cub, load_cub_split
from .classification.hf import load_hf_classification_split
from .classification.imagenet_s import check_imagenet_s, load_imagenet_s_split
from .classification.stanford_dogs import check_stanford_dogs, load_stanford_dogs_split
from .classification.types import ClassificationSplit
from .classification.waterbirds import check_waterbirds, load_waterbirds_split
from .pointcloud.modelnet40 import check_modelnet40, load_modelnet40_split
from .pointcloud.scanobjectnn import check_scanobjectnn, load_scanobjectnn_split
from .rec.loading import check_split, load_rec_split, resolve_rec_source
from .regions import load_regions


@dataclass(frozen=True)
class DatasetFormat:
    """How one on-disk format is read: ``load(dataset_cfg, split)`` and ``check(dataset_cfg)``."""

    load: Callable[[Mapping[str, Any], str], Any]
    check: Callable[[Mapping[str, Any]], None]
    description: str


def _given(config: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """The ``keys`` the dataset section sets, as keyword arguments: a key it lacks takes the loader's own
    default, so no default is restated here (the YAML states the CLI's, the loader's signature the library's)."""
    return {key: config[key] for key in keys if key in config}


REC_KEYS = ("root", "layout", "image_dir", "split_by", "hf_id")


def _load_rec(config: Mapping[str, Any], split: str):
    return load_rec_split(config["name"], split, **_given(config, *REC_KEYS, "detections"))


def _check_rec(config: Mapping[str, Any]) -> None:
    """Every configured split's name, layout and folders, and the detections file; nothing is parsed."""
    if config.get("require_detections") and not config.get("detections"):
        raise ConfigError(f"this experiment scores detector proposals: set dataset.detections=<ReCLIP's "
                          f"{config['name']}_dets_dict.json> (from ReCLIP's released data, docs/datasets.md)")
    splits = list(config.get("splits") or [])
    for split in splits:  # every name first: a typo is reported before any missing folder
        check_split(config["name"], split, config.get("split_by"))
    for split in splits:
        resolve_rec_source(config["name"], split, **_given(config, *REC_KEYS))
    detections = config.get("detections")
    if detections and not Path(detections).is_file():
        raise DatasetError(f"dataset.detections {detections} is not a file (expected ReCLIP's "
                           f"<dataset>_dets_dict.json: image_id -> [[x, y, w, h], ...])")


def _load_box_jsonl(config: Mapping[str, Any], split: str):
    return load_box_classification_split(_root(config), split, **_given(config, "name"))


def _check_box_jsonl(config: Mapping[str, Any]) -> None:
    check_box_classification_root(_root(config), list(config.get("splits") or []))


def _root(config: Mapping[str, Any]) -> str:
    if not config.get("root"):
        raise DatasetError(f"set dataset.root for {config.get('name')} (format {config.get('format')}): see "
                           f"docs/datasets.md for its layout, or dataset.hf_id for a HF copy")
    return config["root"]


def with_classnames(split: ClassificationSplit, value: Any, allow_duplicates: bool = False) -> ClassificationSplit:
    """``dataset.classnames=<txt or list>``: names in label order replace the loader's; the names a run uses
    are distinct (:func:`falip.data.classnames.check_distinct`) unless ``allow_duplicates`` (a reference protocol
    that names two classes alike: their texts are one embedding and the first takes every tie, said in the
    split's notes)."""
    names = class_names_from(value)
    if names is not None:
        if split.classes and len(names) != len(split.classes):
            raise DatasetError(f"dataset.classnames={value} has {len(names)} names, {split.dataset} has "
                               f"{len(split.classes)} classes")
        shown = value if isinstance(value, str) else "dataset.classnames (a list)"
        split = replace(split, classes=names, notes=split.notes + [f"class names from {shown}"])
    if not split.classes:
        raise DatasetError(f"{split.dataset} has no class names: set dataset.classnames=<txt, one per line>")
    if allow_duplicates:
        twice = sorted({name for name in split.classes if split.classes.count(name) > 1})
        if twice:
            split = replace(split, notes=split.notes + [
                f"dataset.allow_duplicate_names: {twice} name several classes; their texts are one embedding, so "
                f"the first such class (lowest label) takes every prediction among them, as argmax picks the first"])
    else:
        check_distinct(split.classes, f"{split.dataset}'s class names ({split.source})")
    labels = {sample.label for sample in split.samples}
    if max(labels) >= len(split.classes) or min(labels) < 0:
        raise DatasetError(f"{split.dataset} {split.split}: labels reach {max(labels)} but there are "
                           f"{len(split.classes)} class names")
    return split


def classification_format(load_official: Callable[[Mapping[str, Any], str], ClassificationSplit],
                          check_official: Callable[[Mapping[str, Any]], None], how_to_get: str,
                          description: str, named_lists: Sequence[str] = ()) -> DatasetFormat:
    """A classification format: the official layout under ``dataset.root``, or a HF copy (``dataset.hf_id``
    + ``dataset.columns``); ``dataset.classnames`` (a txt or a list) applies to both. ``named_lists``: the
    values of ``dataset.classnames`` that name one of the loader's own lists (ImageNet-S: clip, wordnet)."""

    def override(config: Mapping[str, Any]) -> Any:
        value = config.get("classnames")
        return None if isinstance(value, str) and value in named_lists else value

    def load(config: Mapping[str, Any], split: str) -> ClassificationSplit:
        if config.get("hf_id"):
            loaded = load_hf_classification_split(config["hf_id"], split, config.get("columns") or {},
                                                  config.get("name", config["format"]), how_to_get)
        else:
            loaded = load_official(config, split)
        return with_classnames(loaded, override(config), bool(config.get("allow_duplicate_names")))

    def check(config: Mapping[str, Any]) -> None:
        class_names_from(override(config))
        if not config.get("hf_id"):
            check_official(config)

    return DatasetFormat(load, check, description)


def _classnames(config: Mapping[str, Any]) -> list[str] | None:
    """``dataset.classnames=<txt or list>`` for a point-cloud set: replaces its names (labels must stay in range)."""
    return class_names_from(config.get("classnames"))


def _distinct(load: Callable[[Mapping[str, Any], str], Any]) -> Callable[[Mapping[str, Any], str], Any]:
    """A point-cloud loader whose class names are checked to be distinct (shape_names.txt or an override)."""
    def loaded(config: Mapping[str, Any], split: str):
        data = load(config, split)
        check_distinct(data.classes, f"{data.dataset}'s class names ({data.source})")
        return data

    return loaded


def _check_pointcloud(check: Callable[[Mapping[str, Any]], None]) -> Callable[[Mapping[str, Any]], None]:
    def checked(config: Mapping[str, Any]) -> None:
        class_names_from(config.get("classnames"))
        check(config)

    return checked


def _regions_file(config: Mapping[str, Any], splits: Sequence[str]) -> str:
    """The regions file of ``dataset.format=regions`` (one split, ``all``), or a one-line error."""
    for split in splits:
        if split != "all":
            raise ConfigError(f"a regions file has one split, 'all' (dataset.splits=[all]), not {split!r}")
    if not config.get("file"):
        raise ConfigError("set regions=<file>: a COCO-format .json or a box .jsonl of your images' boxes "
                          "(falip/data/regions.py)")
    return config["file"]


def _load_regions(config: Mapping[str, Any], split: str):
    return load_regions(_regions_file(config, [split]), config.get("image_root"))


def _check_regions(config: Mapping[str, Any]) -> None:
    path = _regions_file(config, list(config.get("splits") or []))
    if not Path(path).is_file():
        raise DatasetError(f"regions file {path} does not exist (a COCO-format .json or a box .jsonl)")


def _coco_boxes_format(flavor: str, how_to_get: str, description: str) -> DatasetFormat:
    """COCO or LVIS box classification (:mod:`falip.data.classification.coco_boxes`)."""
    return classification_format(
        lambda c, split: load_coco_box_split(_root(c), split, flavor,
                                             **_given(c, "name", "annotations", "image_dir", "min_area")),
        lambda c: check_coco_boxes(_root(c), c.get("splits") or [], flavor, **_given(c, "annotations", "image_dir")),
        how_to_get, description)


FORMATS: dict[str, DatasetFormat] = {
    "regions": DatasetFormat(_load_regions, _check_regions,
                             "your own images and boxes, no labels: COCO-format .json or box .jsonl (falip/data/regions.py)"),
    "rec": DatasetFormat(_load_rec, _check_rec, "RefCOCO-style REC: refer toolkit / ReCLIP jsonl / HF layouts"),
    "box_jsonl": classification_format(_load_box_jsonl, _check_box_jsonl, "classes.txt + <split>.jsonl",
                                       "region classification: classes.txt + <split>.jsonl (falip.data.classification.boxes)"),
    "cub": classification_format(lambda c, split: load_cub_split(_root(c), split),
                                 lambda c: check_cub(_root(c), c.get("splits") or []), cub.HOW_TO_GET,
                                 "CUB-200-2011 (images.txt, bounding_boxes.txt ...)"),
    "stanford_dogs": classification_format(lambda c, split: load_stanford_dogs_split(_root(c), split),
                                           lambda c: check_stanford_dogs(_root(c), c.get("splits") or []),
                                           stanford_dogs.HOW_TO_GET, "Stanford Dogs (Images/, Annotation/, *_list.mat)"),
    "imagenet_s": classification_format(
        lambda c, split: load_imagenet_s_split(_root(c), split, **_given(c, "variant", "roa", "categories"),
                                               names=imagenet_s.name_list(c.get("classnames"))),
        lambda c: check_imagenet_s(_root(c), c.get("splits") or [], **_given(c, "variant", "roa")),
        imagenet_s.HOW_TO_GET, "ImageNet-S validation + validation-segmentation", named_lists=imagenet_s.NAME_LISTS),
    "waterbirds": classification_format(
        lambda c, split: load_waterbirds_split(_root(c), split, c.get("cub_root")),
        lambda c: check_waterbirds(_root(c), c.get("splits") or [], c.get("cub_root")), waterbirds.HOW_TO_GET,
        "Waterbirds (metadata.csv) + CUB-200-2011 boxes"),
    "coco_boxes": _coco_boxes_format(
        "coco", "COCO 2017 from https://cocodataset.org/#download: annotations/instances_val2017.json and val2017/",
        "COCO 2017 boxes (annotations/instances_<split>.json + <split>/): every non-crowd box, classified"),
    "lvis_boxes": _coco_boxes_format(
        "lvis", "LVIS v1 from https://www.lvisdataset.org/dataset (lvis_v1_val.json) with the COCO 2017 images",
        "LVIS v1 boxes (lvis_v1_<split>.json, COCO 2017 images): every box, r/c/f groups"),
    "modelnet40": DatasetFormat(
        _distinct(lambda c, split: load_modelnet40_split(_root(c), split, classes=_classnames(c),
                                                         **_given(c, "num_points", "name"))),
        _check_pointcloud(lambda c: check_modelnet40(_root(c), c.get("splits") or [])),
        "ModelNet40 modelnet40_ply_hdf5_2048 (ply_data_<split><k>.h5, shape_names.txt)"),
    "scanobjectnn": DatasetFormat(
        _distinct(lambda c, split: load_scanobjectnn_split(_root(c), split, classes=_classnames(c),
                                                           **_given(c, "variant", "num_points", "normalize", "name"))),
        _check_pointcloud(lambda c: check_scanobjectnn(_root(c), c.get("splits") or [], **_given(c, "variant"))),
        "ScanObjectNN h5_files (main_split[_nobg]/<split>_objectdataset*.h5)"),
}


def dataset_format(config: Mapping[str, Any]) -> DatasetFormat:
    """The entry of :data:`FORMATS` that ``dataset.format`` names."""
    name = config.get("format")
    if name not in FORMATS:
        raise ConfigError(f"dataset.format={name!r} is not a known format; known: {sorted(FORMATS)}")
    return FORMATS[name]


def load_dataset_split(config: Mapping[str, Any], split: str):
    """One split of the dataset ``config`` (the ``dataset`` section of an experiment) describes."""
    return dataset_format(config).load(config, split)


def check_dataset(config: Mapping[str, Any]) -> None:
    """Fail fast, before the model loads: names, layout, folders of every configured split."""
    if not config.get("splits"):
        raise ConfigError(f"dataset.splits is empty for {config.get('name')}: name at least one split")
    dataset_format(config).check(config)
