"""Encode regions of images under a visual prompt, batching forwards across images.

Two steps, so that the CPU-heavy one can run in dataloader workers:

1. :func:`prepare_regions` (model-free): edits + preprocessing + bias for one image's boxes.
2. :class:`RegionEncoder` (holds the model): queues prepared images of one prompt, runs forwards
   in batches of ``batch_size`` rows across images, and hands back each image's ``(K, D)`` embeddings.

:func:`encode_items` runs both over a whole dataset (image loading in optional dataloader workers).

A prompt that does not depend on the region (plain CLIP) costs one forward per image, whatever the
number of boxes; otherwise one forward per box. :attr:`RegionEncoder.forwards` counts the rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Iterator, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .clip import FoveatedCLIP
from .geometry import Box, clip_box_to_image
from .preprocessing import ImagePreprocessor
from .prompts import VisualPrompt


@dataclass
class RegionInputs:
    """Model inputs for the K regions of one image under one prompt.

    ``pixels`` has 1 row when all regions share the image (no region-dependent edit), else K rows;
    ``bias`` is ``(K, T, T)`` or None; ``rows`` is how many forward rows the regions cost.
    """

    pixels: torch.Tensor
    bias: torch.Tensor | None
    num_regions: int
    rows: int

    def expanded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pixels (and bias) with exactly ``rows`` rows."""
        pixels = self.pixels if self.pixels.shape[0] == self.rows else self.pixels.expand(self.rows, -1, -1, -1)
        return pixels, self.bias


def prepare_regions(preprocessor: ImagePreprocessor, image: Image.Image, boxes: Sequence[Box],
                    prompt: VisualPrompt, resize: str = "squash") -> RegionInputs:
    """Edit, preprocess and bias the regions ``boxes`` (xyxy, original-image pixels) of ``image``.

    Boxes are clipped to the image; an empty box or one outside the image raises
    :class:`falip.geometry.BoxError`.
    """
    if not boxes:
        raise ValueError("no regions to encode")
    boxes = [clip_box_to_image(box, image.width, image.height) for box in boxes]
    count = len(boxes)
    if not prompt.region_dependent:
        return RegionInputs(preprocessor(image, resize), None, count, rows=1)
    if prompt.edits_depend_on_region:
        edited = prompt.apply_edits(image, boxes)
        pixels = preprocessor([img for img, _ in edited], resize)
        frames = [(img.size, box) for img, box in edited]
    else:
        pixels = preprocessor(image, resize)
        frames = [(image.size, box) for box in boxes]
    bias = None
    if prompt.bias is not None:
        input_boxes = [preprocessor.geometry(w, h, resize).box_to_input(box) for (w, h), box in frames]
        bias = prompt.bias.build(input_boxes, preprocessor.image_size, preprocessor.patch_size)
    return RegionInputs(pixels, bias, count, rows=count)


class RegionEncoder:
    """Runs the forwards of one prompt in batches across images (all rows share the prompt's bias layers)."""

    def __init__(self, model: FoveatedCLIP, prompt: VisualPrompt, batch_size: int = 64):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.prompt, self.batch_size = model, prompt, batch_size
        self.forwards = 0
        self._pending: list[tuple[Hashable, RegionInputs]] = []
        self._pending_rows = 0

    @property
    def bias_layers(self) -> list[int] | None:
        if self.prompt.bias is None or self.prompt.bias.layers is None:
            return None
        return list(self.prompt.bias.layers)

    def add(self, key: Hashable, inputs: RegionInputs) -> list[tuple[Hashable, torch.Tensor]]:
        """Queue one image's regions; returns the ``(key, (K, D) embeddings)`` that became ready."""
        self._pending.append((key, inputs))
        self._pending_rows += inputs.rows
        return self.flush() if self._pending_rows >= self.batch_size else []

    @torch.no_grad()
    def flush(self) -> list[tuple[Hashable, torch.Tensor]]:
        """Forward everything queued (in chunks of ``batch_size`` rows) and return it per key."""
        if not self._pending:
            return []
        parts = [item.expanded() for _, item in self._pending]
        pixels = torch.cat([p for p, _ in parts])
        biases = [b for _, b in parts]
        bias = torch.cat(biases) if biases[0] is not None else None
        outputs = []
        for start in range(0, pixels.shape[0], self.batch_size):
            stop = start + self.batch_size
            chunk_bias = bias[start:stop] if bias is not None else None
            outputs.append(self.model.encode_image(pixels[start:stop], chunk_bias, self.bias_layers).float().cpu())
        embeddings = torch.cat(outputs)
        self.forwards += embeddings.shape[0]
        ready, offset = [], 0
        for key, item in self._pending:
            rows = embeddings[offset:offset + item.rows]
            offset += item.rows
            ready.append((key, rows if item.rows == item.num_regions else rows.expand(item.num_regions, -1)))
        self._pending, self._pending_rows = [], 0
        return ready


def encode_regions(model: FoveatedCLIP, image: Image.Image, boxes: Sequence[Box], prompt: VisualPrompt,
                   resize: str = "squash", batch_size: int = 64) -> torch.Tensor:
    """L2-normalised embeddings ``(K, D)`` of the K regions ``boxes`` (xyxy pixels) of ``image`` under ``prompt``."""
    encoder = RegionEncoder(model, prompt, batch_size)
    inputs = prepare_regions(model.preprocessor, image.convert("RGB"), boxes, prompt, resize)
    ready = encoder.add(0, inputs) + encoder.flush()
    return ready[0][1]


class _PreparedItems(Dataset):
    """Loads each item's image once and prepares every prompt's region inputs (runs in dataloader workers)."""

    def __init__(self, items: Sequence, boxes: Sequence[Sequence[Box]], prompts: Sequence[VisualPrompt],
                 preprocessor: ImagePreprocessor, resize: str):
        self.items, self.boxes, self.prompts = items, boxes, prompts
        self.preprocessor, self.resize = preprocessor, resize

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, dict[str, RegionInputs] | str]:
        item = self.items[index]
        where = getattr(item, "image_path", f"item {index}")
        try:
            image = item.load_image()
        except (OSError, UnidentifiedImageError, ValueError) as error:
            return index, f"cannot read image {where}: {type(error).__name__}: {error}"
        width, height = getattr(item, "width", None), getattr(item, "height", None)
        if width and height and (image.width, image.height) != (width, height):
            return index, f"image {where} is {image.width}x{image.height} but the annotations say {width}x{height}"
        try:
            return index, {prompt.name: prepare_regions(self.preprocessor, image, self.boxes[index], prompt,
                                                        self.resize) for prompt in self.prompts}
        except ValueError as error:  # BoxError is a ValueError
            return index, f"image {where}: {error}"


def _identity(item):
    return item


def encode_items(model: FoveatedCLIP, items: Sequence, boxes: Sequence[Sequence[Box]],
                 prompts: Sequence[VisualPrompt], *, resize: str = "squash", batch_size: int = 64,
                 num_workers: int = 0, progress: bool = True, desc: str = "",
                 forwards: dict[str, int] | None = None) -> Iterator[tuple[int, dict[str, torch.Tensor] | str]]:
    """Region embeddings of many items under many prompts, batched across items.

    ``items[i]`` has ``load_image()`` (and optionally ``image_path``, ``width``, ``height``);
    ``boxes[i]`` are its regions. Yields ``(i, {prompt name: (K_i, D)})`` once every prompt of item
    ``i`` is done (not necessarily in order), or ``(i, "reason")`` at once when the item cannot be
    used (unreadable image, size mismatch, bad box) -- the caller decides whether to skip or stop.
    ``forwards`` (if given) receives the number of forward rows per prompt.
    """
    names = [prompt.name for prompt in prompts]
    if len(set(names)) != len(names):
        raise ValueError(f"prompt names must be unique, got {names}")
    encoders = {prompt.name: RegionEncoder(model, prompt, batch_size) for prompt in prompts}
    waiting: dict[int, dict[str, torch.Tensor]] = {}
    loader = DataLoader(_PreparedItems(items, boxes, prompts, model.preprocessor, resize), batch_size=None,
                        shuffle=False, num_workers=num_workers, collate_fn=_identity)

    def collect(name: str, ready: list[tuple[Hashable, torch.Tensor]]):
        for index, embedding in ready:
            waiting.setdefault(index, {})[name] = embedding
            if len(waiting[index]) == len(names):
                yield index, waiting.pop(index)

    for index, prepared in tqdm(loader, total=len(items), desc=desc, unit="img", disable=not progress, leave=False):
        if isinstance(prepared, str):
            yield index, prepared
            continue
        for name, inputs in prepared.items():
            yield from collect(name, encoders[name].add(index, inputs))
    for name, encoder in encoders.items():
        yield from collect(name, encoder.flush())
    if forwards is not None:
        forwards.update({name: encoder.forwards for name, encoder in encoders.items()})
    assert not waiting, "every prepared item must have been encoded under every prompt"
