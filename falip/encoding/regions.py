"""Encode regions of images under a visual prompt, batching forwards across images.

Two steps, so that the CPU-heavy one can run in dataloader workers:

1. :func:`prepare_regions` (model-free): edits + preprocessing + box geometry for one image's boxes.
2. :class:`RegionEncoder` (holds the model): queues prepared images of one prompt, runs forwards
   in full batches of ``batch_size`` rows across images (building the bias once per batch), and
   hands back each image's ``(K, D)`` embeddings.

:func:`encode_items` runs both over a whole dataset (image loading in optional dataloader workers).

A prompt that does not depend on the region (plain CLIP) costs one forward per image, whatever the
number of boxes; otherwise one forward per box. :attr:`RegionEncoder.image_forwards` counts the rows.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Hashable, Iterator, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, get_worker_info
from tqdm.auto import tqdm

from ..errors import FalipError
from ..geometry import Box, Region
from ..model.clip import FoveatedCLIP
from ..model.preprocessing import ImagePreprocessor
from ..model.steering import EXACT, ExecutionPlan, Steering

# Image forwards per batch. 32 measured fastest on CPU for ViT-B/16-sized weights in the REC pipeline
# (1.11x batch 64, 1.16x batch 128, 1.10x batch 16; scripts/bench_rec.py -> results/benchmarks/rec_throughput.csv);
# on a GPU pass run.batch_size=256.
DEFAULT_BATCH_SIZE = 32
from ..prompts.prompt import VisualPrompt, roa_token_mask


@dataclass
class EncodingCounts:
    """What encoding a dataset cost and met: filled in by :func:`encode_items`.

    ``image_forwards``: forward rows (region embeddings) per prompt; ``unbiased_layer_rows``: image
    rows through the layers before the first biased one, per prompt (fewer than ``image_forwards``
    when regions share their image's pixels); ``clipped_boxes``: boxes partly outside their image,
    clipped to it (counted once per box, not per prompt).
    """

    image_forwards: dict[str, int] = field(default_factory=dict)
    unbiased_layer_rows: dict[str, int] = field(default_factory=dict)
    clipped_boxes: int = 0
    empty_regions: dict[str, int] = field(default_factory=dict)  # per prompt: rows with no region (no bias)

    @classmethod
    def zero(cls, prompt_names: Sequence[str]) -> "EncodingCounts":
        """Zero for every prompt (the start of a sum, so that every prompt has a count, in this order)."""
        return cls({n: 0 for n in prompt_names}, {n: 0 for n in prompt_names}, 0, {n: 0 for n in prompt_names})

    def __add__(self, other: "EncodingCounts") -> "EncodingCounts":
        """Counts of two shards (ranks, resumed parts) together: per prompt and in all."""
        def merged(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {name: a.get(name, 0) + b.get(name, 0) for name in {**a, **b}}

        return EncodingCounts(merged(self.image_forwards, other.image_forwards),
                              merged(self.unbiased_layer_rows, other.unbiased_layer_rows),
                              self.clipped_boxes + other.clipped_boxes, merged(self.empty_regions, other.empty_regions))


@dataclass
class RegionInputs:
    """Model inputs for the K regions of one image under one prompt.

    ``pixels`` has 1 row when all regions share the image (no region-dependent edit), else K rows;
    ``input_regions`` are the K regions in model-input pixels when the prompt has a bias (the bias
    itself is built per forward batch by :class:`RegionEncoder`); ``rows`` is how many forward rows
    the regions cost.
    """

    pixels: torch.Tensor
    input_regions: list[Region] | None
    num_regions: int
    rows: int
    reference_pixels: torch.Tensor | None = None  # the unedited image (1 row), for two-stream interventions


def prepare_regions(preprocessor: ImagePreprocessor, image: Image.Image, regions: Sequence[Region | Box],
                    prompt: VisualPrompt, resize: str = "squash") -> RegionInputs:
    """Edit and preprocess the ``regions`` (each a :class:`~falip.geometry.Region` or one xyxy box, in
    original-image pixels) of ``image``, and map them into the model input for the prompt's bias.

    Boxes are clipped to the image; an empty box or one outside the image (or outside the model
    input after a center crop) raises :class:`falip.geometry.BoxError`.
    """
    if not regions:
        raise ValueError("no regions to encode")
    regions = [Region.of(region).clipped(image.width, image.height) for region in regions]
    count = len(regions)
    if not prompt.region_dependent:
        return RegionInputs(preprocessor(image, resize), None, count, rows=1)
    if prompt.edits_depend_on_region:
        edited = prompt.apply_edits(image, regions)
        pixels = preprocessor([img for img, _ in edited], resize)
        frames = [(img.size, region) for img, region in edited]
    else:
        pixels = preprocessor(image, resize)
        frames = [(image.size, region) for region in regions]
    input_regions = None
    if prompt.bias is not None or prompt.intervention is not None:
        input_regions = [preprocessor.geometry(w, h, resize).region_to_input(region) for (w, h), region in frames]
    reference = preprocessor(image, resize) if prompt.needs_reference_image else None
    return RegionInputs(pixels, input_regions, count, rows=count, reference_pixels=reference)


@dataclass
class Views:
    """Model inputs an item renders itself (point-cloud depth maps): ``pixels`` ``(V, 3, S, S)``, exactly
    what the model sees (no further preprocessing), and per view its region in input pixels, or ``None``
    for a view with nothing to attend to (it gets no bias)."""

    pixels: torch.Tensor
    regions: list[Region | None]


def prepare_views(views: Views, prompt: VisualPrompt) -> RegionInputs:
    """One row per view; its region goes to the prompt's bias / intervention. Image edits do not apply
    to rendered views (:class:`ValueError`)."""
    if prompt.edits:
        raise ValueError(f"prompt {prompt.name!r} edits pixels, which rendered views (point clouds) do not take: "
                         f"use bias-only prompts")
    count = len(views.regions)
    needs_regions = prompt.bias is not None or prompt.intervention is not None
    return RegionInputs(views.pixels, list(views.regions) if needs_regions else None, count, rows=count)


def steering_for(model: FoveatedCLIP, prompt: VisualPrompt, input_regions: Sequence[Region | None],
                 reference_pixels: torch.Tensor | None = None,
                 reference_index: Sequence[int] | None = None) -> Steering:
    """What ``prompt`` does inside the tower for rows whose regions (model-input frame) are ``input_regions``:
    its bias (``alpha=None`` = the model's own) and layers, its intervention with the ROA tokens it reads, and
    the reference stream of a two-stream intervention. The one place a prompt becomes a :class:`Steering`."""
    bias, layers, roa_tokens = None, None, None
    if prompt.bias is not None:
        spec = prompt.bias.for_model(model)
        bias = spec.build(list(input_regions), model.image_size, model.patch_size, num_heads=model.num_heads)
        layers = list(prompt.bias.layers) if prompt.bias.layers is not None else None
    if prompt.intervention is not None:
        roa_tokens = roa_token_mask(list(input_regions), model.image_size, model.patch_size)
    return Steering(bias=bias, bias_layers=layers, intervention=prompt.intervention, reference_pixels=reference_pixels,
                    reference_index=reference_index, roa_tokens=roa_tokens)


class RegionEncoder:
    """Runs the forwards of one prompt in full batches across images.

    Rows are queued in arrival order and forwarded ``batch_size`` at a time, so an image's regions
    may straddle two batches; only :meth:`flush` runs a partial batch. The prompt's bias is built
    once per batch from the queued boxes. Regions that share their image's pixels (a bias without
    a region-dependent edit) pass those pixels once per batch with an ``image_index``, so the
    layers before the first biased one run once per image (:meth:`FoveatedCLIP.encode_image`).
    :attr:`image_forwards` counts the rows run (one per region embedding); :attr:`unbiased_layer_rows`
    counts the image rows the layers before the first biased one ran on.
    """

    def __init__(self, model: FoveatedCLIP, prompt: VisualPrompt, batch_size: int = DEFAULT_BATCH_SIZE,
                 plan: ExecutionPlan = EXACT):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.prompt, self.batch_size, self.plan = model, prompt, batch_size, plan
        self.image_forwards = 0
        self.unbiased_layer_rows = 0
        self.empty_regions = 0  # rows whose region is None (an empty view): they get no bias
        self._waiting: deque[tuple[Hashable, RegionInputs]] = deque()  # not yet handed back, in order
        self._queued: deque[list] = deque()  # [pixels, rows not yet forwarded, reference pixels], in order
        self._queued_regions: list[Region] = []
        self._queued_rows = 0
        self._done: list[torch.Tensor] = []  # embeddings forwarded but not yet handed back
        self._done_rows = 0

    def add(self, key: Hashable, inputs: RegionInputs) -> list[tuple[Hashable, torch.Tensor]]:
        """Queue one image's regions; returns the ``(key, (K, D) embeddings)`` that became ready."""
        if (self.prompt.bias is not None or self.prompt.intervention is not None) and (
                inputs.input_regions is None or len(inputs.input_regions) != inputs.rows):
            raise ValueError(f"prompt {self.prompt.name!r} has a bias or an intervention: its inputs need one "
                             f"input region per row")
        if inputs.pixels.shape[0] not in (1, inputs.rows):
            raise ValueError(f"inputs have {inputs.pixels.shape[0]} pixel rows for {inputs.rows} forward rows")
        self._waiting.append((key, inputs))
        self._queued.append([inputs.pixels, inputs.rows, inputs.reference_pixels])
        self._queued_regions.extend(inputs.input_regions or [])
        self._queued_rows += inputs.rows
        while self._queued_rows >= self.batch_size:
            self._forward(self.batch_size)
        return self._ready()

    def flush(self) -> list[tuple[Hashable, torch.Tensor]]:
        """Forward every queued row (the last batch may be partial) and hand back everything."""
        while self._queued_rows:
            self._forward(min(self.batch_size, self._queued_rows))
        return self._ready()

    def _take_rows(self, count: int):
        """Pixels and ``image_index`` of the next ``count`` queued rows (index None: one pixel row per row),
        and the reference pixels (one per image) with the reference row of each row, when queued."""
        parts, index, offset, left = [], [], 0, count
        references, reference_index = [], []
        while left:
            entry = self._queued[0]  # [pixels, rows not yet forwarded, reference pixels]
            pixels = entry[0]
            take = min(left, entry[1])
            if entry[2] is not None:
                references.append(entry[2])
                reference_index.extend([len(references) - 1] * take)
            if pixels.shape[0] == 1:  # every row of this image reads the same pixels: pass them once
                parts.append(pixels)
                index.extend([offset] * take)
                offset += 1
            else:
                parts.append(pixels[:take])
                index.extend(range(offset, offset + take))
                offset += take
                entry[0] = pixels[take:]
            entry[1] -= take
            left -= take
            if entry[1] == 0:
                self._queued.popleft()
        pixels = torch.cat(parts) if len(parts) > 1 else parts[0]
        reference = (torch.cat(references), reference_index) if references else (None, None)
        return pixels, (None if offset == count else index), reference

    @torch.no_grad()
    def _forward(self, count: int) -> None:
        pixels, image_index, (reference_pixels, reference_index) = self._take_rows(count)
        regions, self._queued_regions = self._queued_regions[:count], self._queued_regions[count:]
        self.empty_regions += sum(region is None for region in regions)
        steering = steering_for(self.model, self.prompt, regions, reference_pixels, reference_index)
        embeddings = self.model.encode_image(pixels, image_index=image_index, steering=steering, plan=self.plan)
        self._done.append(embeddings.float().cpu())
        self._done_rows += count
        self._queued_rows -= count
        self.image_forwards += count
        self.unbiased_layer_rows += pixels.shape[0]

    def _ready(self) -> list[tuple[Hashable, torch.Tensor]]:
        ready = []
        while self._waiting and self._waiting[0][1].rows <= self._done_rows:
            key, item = self._waiting.popleft()
            done = torch.cat(self._done) if len(self._done) > 1 else self._done[0]
            rows = done[:item.rows]
            self._done = [done[item.rows:]] if done.shape[0] > item.rows else []
            self._done_rows -= item.rows
            ready.append((key, rows if item.rows == item.num_regions else rows.expand(item.num_regions, -1)))
        return ready


def encode_regions(model: FoveatedCLIP, image: Image.Image, regions: Sequence[Region | Box], prompt: VisualPrompt,
                   resize: str = "squash", batch_size: int = DEFAULT_BATCH_SIZE, plan: ExecutionPlan = EXACT) -> torch.Tensor:
    """L2-normalised embeddings ``(K, D)`` of the K ``regions`` of ``image`` under ``prompt``: each an
    xyxy box in pixels, or a :class:`~falip.geometry.Region` (several boxes as one ROA, or a mask)."""
    encoder = RegionEncoder(model, prompt, batch_size, plan)
    inputs = prepare_regions(model.preprocessor, image.convert("RGB"), regions, prompt, resize)
    ready = encoder.add(0, inputs) + encoder.flush()
    return ready[0][1]


class PreparedItems(Dataset):
    """Loads each item's image (or renders its views) once and prepares every prompt's region inputs: the one
    item preparation of the scoring loop (run in dataloader workers) and of the analyses."""

    def __init__(self, items: Sequence, regions: Sequence[Sequence[Region | Box] | None],
                 prompts: Sequence[VisualPrompt], preprocessor: ImagePreprocessor, resize: str,
                 render_device: torch.device | str = "cpu"):
        self.items, self.regions, self.prompts = items, regions, prompts
        self.preprocessor, self.resize, self.render_device = preprocessor, resize, render_device

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, dict[str, RegionInputs] | str, int]:
        """``(index, {prompt name: inputs}, clipped boxes)``, or ``(index, reason, 0)`` for an unusable item."""
        item = self.items[index]
        where = getattr(item, "image_path", f"item {index}")
        if callable(getattr(item, "load_views", None)):  # an item that renders its own views (point clouds)
            return self._rendered(index, item, where)
        try:
            image = item.load_image()
        except FalipError as error:  # the loader marked this item unusable
            return index, f"image {where}: {error}", 0
        except (OSError, UnidentifiedImageError, ValueError) as error:
            return index, f"cannot read image {where}: {type(error).__name__}: {error}", 0
        width, height = getattr(item, "width", None), getattr(item, "height", None)
        if width and height and (image.width, image.height) != (width, height):
            return index, f"image {where} is {image.width}x{image.height} but the annotations say {width}x{height}", 0
        try:
            prepared = {prompt.name: prepare_regions(self.preprocessor, image, self.regions[index], prompt, self.resize)
                        for prompt in self.prompts}
        except ValueError as error:  # BoxError is a ValueError
            return index, f"image {where}: {error}", 0
        clipped = sum(Region.of(region).num_clipped(image.width, image.height) for region in self.regions[index])
        return index, self._portable(prepared), clipped

    def _rendered(self, index: int, item, where) -> tuple[int, dict[str, RegionInputs] | str, int]:
        try:
            views = item.load_views(self.preprocessor.image_size, self.render_device)
        except FalipError as error:  # e.g. a shape with no point in any view
            return index, f"{where}: {error}", 0
        return index, self._portable({prompt.name: prepare_views(views, prompt) for prompt in self.prompts}), 0

    @staticmethod
    def _portable(prepared: dict[str, RegionInputs]) -> dict[str, RegionInputs]:
        if get_worker_info() is None:
            return prepared
        # in a dataloader worker: pickled by value, much cheaper than torch's shared-memory handoff
        return {name: replace(inputs, pixels=inputs.pixels.numpy(), reference_pixels=None if
                              inputs.reference_pixels is None else inputs.reference_pixels.numpy())
                for name, inputs in prepared.items()}


def _identity(item):
    return item


def encode_items(model: FoveatedCLIP, items: Sequence, regions: Sequence[Sequence[Region | Box]],
                 prompts: Sequence[VisualPrompt], *, resize: str = "squash", batch_size: int = DEFAULT_BATCH_SIZE,
                 num_workers: int = 0, prefetch_images: int = 64, progress: bool = True, desc: str = "",
                 counts: EncodingCounts | None = None,
                 plan: ExecutionPlan = EXACT) -> Iterator[tuple[int, dict[str, torch.Tensor] | str]]:
    """Region embeddings of many items under many prompts, batched across items.

    ``items[i]`` has ``load_image()`` (and optionally ``image_path``, ``width``, ``height``) and
    ``regions[i]`` are its regions (boxes or :class:`~falip.geometry.Region`); or it renders its own
    model inputs with ``load_views(input_size, device) -> Views`` (point clouds; ``regions[i]`` unused). Yields ``(i, {prompt name: (K_i, D)})`` once every prompt of item
    ``i`` is done (not necessarily in order), or ``(i, "reason")`` at once when the item cannot be
    used (unreadable image, size mismatch, bad box) -- the caller decides whether to skip or stop.
    ``counts`` (if given) receives what the encoding cost (:class:`EncodingCounts`); ``plan`` is how every
    forward runs (:class:`~falip.model.steering.ExecutionPlan`: exact trims by default). With ``num_workers``
    dataloader workers, ``prefetch_images`` (in all) are prepared ahead: at least the images of one
    batch, so that the model never waits for the next one while workers have a core to run on.
    """
    names = [prompt.name for prompt in prompts]
    if len(set(names)) != len(names):
        raise ValueError(f"prompt names must be unique, got {names}")
    encoders = {prompt.name: RegionEncoder(model, prompt, batch_size, plan) for prompt in prompts}
    waiting: dict[int, dict[str, torch.Tensor]] = {}
    # items that render their views (point clouds) do it on the model's device, or on the CPU in workers
    prepared_items = PreparedItems(items, regions, prompts, model.preprocessor, resize,
                                    render_device=model.device if not num_workers else "cpu")
    if num_workers:
        loader = DataLoader(prepared_items, batch_size=None, shuffle=False, num_workers=num_workers,
                            collate_fn=_identity, prefetch_factor=max(2, math.ceil(prefetch_images / num_workers)))
    else:  # in this process: a plain loop costs less per image than a DataLoader's machinery
        loader = (prepared_items[index] for index in range(len(prepared_items)))

    def collect(name: str, ready: list[tuple[Hashable, torch.Tensor]]):
        for index, embedding in ready:
            waiting.setdefault(index, {})[name] = embedding
            if len(waiting[index]) == len(names):
                yield index, waiting.pop(index)

    clipped = 0
    for index, prepared, clipped_here in tqdm(loader, total=len(items), desc=desc, unit="img", disable=not progress,
                                              leave=False):
        if isinstance(prepared, str):
            yield index, prepared
            continue
        clipped += clipped_here
        for name, inputs in prepared.items():
            if not isinstance(inputs.pixels, torch.Tensor):  # from a dataloader worker
                inputs.pixels = torch.from_numpy(inputs.pixels)
                if inputs.reference_pixels is not None:
                    inputs.reference_pixels = torch.from_numpy(inputs.reference_pixels)
            yield from collect(name, encoders[name].add(index, inputs))
    for name, encoder in encoders.items():
        yield from collect(name, encoder.flush())
    if counts is not None:
        counts.image_forwards.update({name: encoder.image_forwards for name, encoder in encoders.items()})
        counts.unbiased_layer_rows.update({name: encoder.unbiased_layer_rows for name, encoder in encoders.items()})
        counts.clipped_boxes += clipped
        counts.empty_regions.update({name: encoder.empty_regions for name, encoder in encoders.items()})
    assert not waiting, "every prepared item must have been encoded under every prompt"
