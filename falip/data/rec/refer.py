"""RefCOCO / RefCOCO+ / RefCOCOg in the refer toolkit's layout (lichengunc/refer).

::

    <root>/<dataset>/instances.json      COCO-style: images, annotations (bbox = [x, y, w, h]), categories
    <root>/<dataset>/refs(<split_by>).p  pickled list of refs: ref_id, ann_id, image_id, split, sentences, ...
    <root>/images/mscoco/images/train2014/COCO_train2014_%012d.jpg    (default image_dir)

Split names follow refer.py's ``getRefIds``: ``testA`` / ``testB`` / ``testC`` take every ref whose
split contains that letter (so ``testAB`` refs count in both), ``test`` every ref whose split
contains "test", anything else an exact match. Real image file names come from instances.json.
"""
from __future__ import annotations

import pickle
from pathlib import Path

from ...errors import DatasetError
from ...geometry import xywh_to_xyxy
from ..coco import image_in_root, load_coco
from .types import RecImage, RecSentence, RecSplit

DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")


def default_image_dir(root: str | Path) -> Path:
    return Path(root) / "images" / "mscoco" / "images" / "train2014"


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles plain data only -- lists, dicts, tuples, str, bytes, numbers, booleans, None: what the
    refer toolkit's refs files hold. Any class or function reference (the way a pickle runs code, e.g.
    ``os.system``) is refused before it is looked up."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it references {module}.{name}, and a refs file holds plain data only "
                                     f"(lists, dicts, strings, numbers): refusing to load it")


def _unpickle(path: Path, encoding: str) -> object:
    with path.open("rb") as handle:
        return _PlainDataUnpickler(handle, encoding=encoding).load()


def read_refs(path: Path) -> list[dict]:
    """The pickled refs (written by Python 2: retried with ``encoding='latin1'`` when needed), read by an
    unpickler that builds plain data only (:class:`_PlainDataUnpickler`): never ``pickle.load``."""
    try:
        try:
            refs = _unpickle(path, "ASCII")
        except UnicodeDecodeError:
            refs = _unpickle(path, "latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
        raise DatasetError(f"{path} is not a readable refs pickle: {error}") from None
    if not isinstance(refs, list) or not all(isinstance(ref, dict) for ref in refs):
        raise DatasetError(f"{path} must hold a list of ref dicts, got {type(refs).__name__}")
    for ref in refs:
        missing = [key for key in REF_KEYS if key not in ref]
        if missing:
            raise DatasetError(f"{path}: ref {ref.get('ref_id', '?')} lacks field(s) {missing}")
        sentences = ref["sentences"]
        if not isinstance(sentences, list) or not all(isinstance(s, dict) for s in sentences):
            raise DatasetError(f"{path}: ref {ref['ref_id']} has 'sentences' {type(sentences).__name__}, expected a "
                               f"list of {{'raw': text, 'sent_id': id}} dicts")
        for sentence in sentences:
            if not isinstance(sentence.get("raw"), str):
                raise DatasetError(f"{path}: a sentence of ref {ref['ref_id']} has 'raw' "
                                   f"{sentence.get('raw', 'missing')!r}, expected the expression's text")
    return refs


def refer_split_rule(split: str):
    """refer.py's ``getRefIds`` rule as a predicate on a ref's stored split: ``testA`` / ``testB`` /
    ``testC`` match every stored split containing that letter, ``test`` every one containing "test",
    anything else only itself. Shared by every loader that reads refs (refer pickles, HF variants)."""
    if split in ("testA", "testB", "testC"):
        return lambda stored: split[-1] in str(stored)
    if split == "test":
        return lambda stored: "test" in str(stored)
    return lambda stored: str(stored) == split


def select_refs(refs: list[dict], split: str, where: Path) -> list[dict]:
    """refer.py's split rule; unknown or empty splits are errors that list what the file has."""
    available = sorted({str(ref["split"]) for ref in refs})
    matches = refer_split_rule(split)
    chosen = [ref for ref in refs if matches(ref["split"])]
    if not chosen:
        raise DatasetError(f"split {split!r} of {where} has no refs (its refs have splits {available}; "
                           f"testA/testB/testC/test also take the refs whose split contains them)")
    return chosen


def _load_instances(path: Path):
    if not path.is_file():
        raise DatasetError(f"{path} not found: the refer layout needs <root>/<dataset>/instances.json")
    return load_coco(path)


def load_refer_split(root: str | Path, dataset: str, split: str, *, split_by: str | None = None,
                     image_dir: str | Path | None = None) -> RecSplit:
    """All sentences of ``split`` grouped by image; candidates = every annotation of the image (gold)."""
    root = Path(root)
    data_dir = root / dataset
    if not data_dir.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DatasetError(f"{data_dir} does not exist (folders in {root}: {present})")
    split_by = split_by or DEFAULT_SPLIT_BY.get(dataset)
    if split_by is None:
        raise DatasetError(f"dataset {dataset!r} has no default split_by: set dataset.split_by "
                           f"(the X of refs(X).p in {data_dir})")
    refs_path = data_dir / f"refs({split_by}).p"
    if not refs_path.is_file():
        found = sorted(p.name for p in data_dir.glob("refs(*).p"))
        raise DatasetError(f"{refs_path} not found (refs files in {data_dir}: {found})")
    image_dir = Path(image_dir) if image_dir else default_image_dir(root)
    coco = _load_instances(data_dir / "instances.json")
    refs = select_refs(read_refs(refs_path), split, refs_path)

    images: dict = {}
    for ref in refs:
        image_id = ref["image_id"]
        if image_id not in images:
            if image_id not in coco.imgs:
                raise DatasetError(f"{refs_path}: ref {ref['ref_id']} names image_id {image_id}, "
                                   f"which {data_dir / 'instances.json'} does not have")
            info = coco.imgs[image_id]
            anns = coco.imgToAnns.get(image_id, [])
            try:
                boxes = {ann["id"]: xywh_to_xyxy(ann["bbox"]) for ann in anns}
            except (KeyError, TypeError, ValueError) as error:
                raise DatasetError(f"{data_dir / 'instances.json'}: an annotation of image {image_id} has a "
                                   f"malformed 'bbox' ({error})") from None
            path = image_in_root(image_dir, info.get("file_name"), f"{data_dir / 'instances.json'}: image {image_id}")
            images[image_id] = RecImage(image_id, path, list(boxes.values()), list(boxes), boxes, [],
                                        info.get("width"), info.get("height"))
        record = images[image_id]
        if ref["ann_id"] not in record.gold_boxes:
            raise DatasetError(f"{refs_path}: ref {ref['ref_id']} refers to annotation {ref['ann_id']}, which "
                               f"image {image_id} does not have in instances.json")
        for index, sentence in enumerate(ref["sentences"]):
            record.sentences.append(RecSentence(sentence.get("sent_id", f"{ref['ref_id']}.{index}"), sentence["raw"],
                                                (ref["ann_id"],), ref["ref_id"]))
    return RecSplit(dataset, split, list(images.values()), source=f"{refs_path} + {data_dir / 'instances.json'}; "
                    f"images {image_dir}")
