"""Dataset config -> dataset objects. A config with a ``generator`` section (the sandbox) is first
written to disk in a real on-disk format, then read back by the same loader as real data."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .data.rec import RecSplit


def materialize(dataset_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset config with ``root`` filled in by the generator when it has one (cached, seeded)."""
    config = dict(dataset_cfg)
    generator = config.get("generator")
    if generator:
        from .sandbox.datasets import build_dataset

        config["root"] = str(build_dataset(dict(generator), config.get("root")))
    return config


def load_rec_dataset_split(dataset_cfg: Mapping[str, Any], split: str) -> RecSplit:
    """One REC split as configured by ``dataset.*`` (refer / ReCLIP jsonl / HF layouts, or the sandbox)."""
    from .data.loading import load_rec_split

    config = materialize(dataset_cfg)
    return load_rec_split(config["name"], split, root=config.get("root"), layout=config.get("layout", "auto"),
                          image_dir=config.get("image_dir"), split_by=config.get("split_by"),
                          hf_id=config.get("hf_id"), detections=config.get("detections"))


def check_rec_dataset(dataset_cfg: Mapping[str, Any]) -> None:
    """Fail fast, before the model loads: every configured split's name, layout and folders, and the
    detections file. Nothing is parsed; a generated (sandbox) dataset is written on first use instead."""
    from .data.loading import check_split, resolve_rec_source
    from .data.rec import DatasetError

    if dataset_cfg.get("generator"):
        return
    splits = list(dataset_cfg.get("splits") or [])
    for split in splits:  # every name first: a typo is reported before any missing folder
        check_split(dataset_cfg["name"], split, dataset_cfg.get("split_by"))
    for split in splits:
        resolve_rec_source(dataset_cfg["name"], split, root=dataset_cfg.get("root"),
                           layout=dataset_cfg.get("layout", "auto"), image_dir=dataset_cfg.get("image_dir"),
                           split_by=dataset_cfg.get("split_by"), hf_id=dataset_cfg.get("hf_id"))
    detections = dataset_cfg.get("detections")
    if detections and not Path(detections).is_file():
        raise DatasetError(f"dataset.detections {detections} is not a file (expected ReCLIP's "
                           f"<dataset>_dets_dict.json: image_id -> [[x, y, w, h], ...])")


def load_classification_dataset_split(dataset_cfg: Mapping[str, Any], split: str):
    """One box-classification split (the project's jsonl format, or the sandbox that writes it)."""
    from .data.box_classification import load_box_classification_split

    config = materialize(dataset_cfg)
    if not config.get("root"):
        raise ValueError(f"set dataset.root for {config.get('name')}: a folder with classes.txt and <split>.jsonl")
    return load_box_classification_split(config["root"], split, name=config.get("name", "boxes"))
