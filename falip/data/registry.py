"""``dataset.format`` -> how to load a split of it and how to check it before the model loads.

Every dataset an experiment can name is one entry of :data:`FORMATS`; a new dataset family is a loader
module under ``falip/data/<task family>/`` plus one entry here. The loaders read real on-disk layouts
only: generated data (the sandbox) is written to disk first by the experiment runner.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import ConfigError, DatasetError
from .classification.boxes import check_box_classification_root, load_box_classification_split
from .rec.loading import check_split, load_rec_split, resolve_rec_source


@dataclass(frozen=True)
class DatasetFormat:
    """How one on-disk format is read: ``load(dataset_cfg, split)`` and ``check(dataset_cfg)``."""

    load: Callable[[Mapping[str, Any], str], Any]
    check: Callable[[Mapping[str, Any]], None]
    description: str


def _load_rec(config: Mapping[str, Any], split: str):
    return load_rec_split(config["name"], split, root=config.get("root"), layout=config.get("layout", "auto"),
                          image_dir=config.get("image_dir"), split_by=config.get("split_by"),
                          hf_id=config.get("hf_id"), detections=config.get("detections"))


def _check_rec(config: Mapping[str, Any]) -> None:
    """Every configured split's name, layout and folders, and the detections file; nothing is parsed."""
    splits = list(config.get("splits") or [])
    for split in splits:  # every name first: a typo is reported before any missing folder
        check_split(config["name"], split, config.get("split_by"))
    for split in splits:
        resolve_rec_source(config["name"], split, root=config.get("root"), layout=config.get("layout", "auto"),
                           image_dir=config.get("image_dir"), split_by=config.get("split_by"),
                           hf_id=config.get("hf_id"))
    detections = config.get("detections")
    if detections and not Path(detections).is_file():
        raise DatasetError(f"dataset.detections {detections} is not a file (expected ReCLIP's "
                           f"<dataset>_dets_dict.json: image_id -> [[x, y, w, h], ...])")


def _load_box_jsonl(config: Mapping[str, Any], split: str):
    return load_box_classification_split(_root(config), split, name=config.get("name", "boxes"))


def _check_box_jsonl(config: Mapping[str, Any]) -> None:
    check_box_classification_root(_root(config), list(config.get("splits") or []))


def _root(config: Mapping[str, Any]) -> str:
    if not config.get("root"):
        raise DatasetError(f"set dataset.root for {config.get('name')}: a folder with classes.txt and <split>.jsonl")
    return config["root"]


FORMATS: dict[str, DatasetFormat] = {
    "rec": DatasetFormat(_load_rec, _check_rec, "RefCOCO-style REC: refer toolkit / ReCLIP jsonl / HF layouts"),
    "box_jsonl": DatasetFormat(_load_box_jsonl, _check_box_jsonl,
                               "region classification: classes.txt + <split>.jsonl (falip.data.classification.boxes)"),
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
