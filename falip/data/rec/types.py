"""The shape every REC loader yields: one :class:`RecImage` per image, holding its candidates and sentences.

Loaders (refer pickles, ReCLIP jsonl, HF datasets) differ only in how they fill these; the REC task
reads nothing else. Grouping by image is what lets the task load and encode each image once.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from ...errors import DatasetError
from ...geometry import Box, has_area
from ..images import read_rgb


@dataclass(frozen=True)
class RecSentence:
    """One referring expression = one test item."""

    sent_id: int | str
    text: str                     # the raw expression as stored (the task lower-cases and templates it)
    target_ann_ids: tuple         # annotation ids of the referred object (usually one)
    ref_id: int | str | None = None


@dataclass
class RecImage:
    """An image with its candidate boxes and every sentence that refers into it."""

    image_id: int | str
    image_path: Path
    candidates: list[Box]                       # xyxy pixels: gold anns, or detector proposals
    candidate_ids: list[int | str | None]       # ann id per candidate (None for detections)
    gold_boxes: dict                            # ann id -> xyxy box (every ann of the image)
    sentences: list[RecSentence] = field(default_factory=list)
    width: int | None = None                    # from the annotation file when it has it
    height: int | None = None
    embedded_image: Any = None                  # a PIL image carried by the dataset itself (HF variants)

    def load_image(self) -> Image.Image:
        """The image as RGB. Raises FileNotFoundError / PIL.UnidentifiedImageError on bad files."""
        return read_rgb(self.image_path, self.embedded_image)

    def target_boxes(self, sentence: RecSentence) -> list[Box]:
        try:
            return [self.gold_boxes[ann_id] for ann_id in sentence.target_ann_ids]
        except KeyError as missing:
            raise DatasetError(f"sentence {sentence.sent_id} of image {self.image_id} refers to annotation "
                               f"{missing} which the image does not have") from None


@dataclass
class RecSplit:
    """All items of one split, grouped by image, plus where they came from."""

    dataset: str
    split: str
    images: list[RecImage]
    source: str                                  # human-readable: files read / HF id, for the sidecar
    candidate_setting: str = "gold"              # "gold" (all annotation boxes) or "detections"
    notes: list[str] = field(default_factory=list)
    zero_area_candidates: int = 0                # candidate boxes of zero width or height, dropped

    @property
    def num_sentences(self) -> int:
        return sum(len(image.sentences) for image in self.images)

    @property
    def num_candidates(self) -> int:
        return sum(len(image.candidates) for image in self.images)

    def captions(self, template: str = "a photo of {}") -> list[str]:
        """Every sentence of the split, templated as the task will score it (the "subtract" caption bank)."""
        return [template.format(s.text.lower()) for image in self.images for s in image.sentences]


def without_zero_area(split: RecSplit) -> RecSplit:
    """The split with every candidate of zero width or height dropped (real COCO has some, e.g. train2014
    annotation 2206849, ``bbox`` [9.98, 188.56, 5.54, 0]): such a box covers no token and no pixel, so it
    cannot be scored, and ReCLIP's harness (which the released FALIP code runs) filters candidates by area.
    The count is kept on the split (sidecar) and in its notes (console)."""
    images, dropped = [], 0
    for image in split.images:
        keep = [index for index, box in enumerate(image.candidates) if has_area(box)]
        if len(keep) == len(image.candidates):
            images.append(image)
            continue
        dropped += len(image.candidates) - len(keep)
        images.append(replace(image, candidates=[image.candidates[i] for i in keep],
                              candidate_ids=[image.candidate_ids[i] for i in keep]))
    if not dropped:
        return split
    note = f"{dropped} candidate box(es) of zero width or height dropped (they cannot be scored)"
    return replace(split, images=images, zero_area_candidates=split.zero_area_candidates + dropped,
                   notes=split.notes + [note])
