"""Box geometry: boxes, IoU, and how preprocessing moves a box into the model-input frame.

One function (:func:`resize_geometry`) decides where an image lands in the model's square input;
both the pixel preprocessing (:func:`resize_to_input`) and the box mapping
(:meth:`ResizeGeometry.box_to_input`) read it, so the two can never disagree.

Boxes are ``(x0, y0, x1, y1)`` floats in pixels ("xyxy"); datasets that store ``[x, y, w, h]``
convert with :func:`xywh_to_xyxy` at load time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

RESIZE_MODES = ("squash", "crop")

Box = tuple[float, float, float, float]


class BoxError(ValueError):
    """A box that cannot be used: empty, non-finite, or outside the image / model-input frame."""


def xywh_to_xyxy(box: Sequence[float]) -> Box:
    x, y, w, h = (float(v) for v in box)
    return x, y, x + w, y + h


def has_area(box: Sequence[float]) -> bool:
    """Whether an xyxy box has positive, finite width and height (real COCO has boxes of height 0)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return all(math.isfinite(v) for v in (x0, y0, x1, y1)) and x1 > x0 and y1 > y0


def box_area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two xyxy boxes (0 when the union is empty)."""
    inter = box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def clip_box_to_image(box: Sequence[float], width: float, height: float, frame: str = "image") -> Box:
    """Clip an xyxy box to a ``width x height`` frame; raise :class:`BoxError` if it is malformed, empty
    or wholly outside it. ``frame`` names the frame in the message ("image", "model-input frame")."""
    if len(box) != 4:
        raise BoxError(f"box {list(box)} must have 4 numbers (x0, y0, x1, y1), got {len(box)}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise BoxError(f"box {list(box)} has a non-finite coordinate")
    if x1 <= x0 or y1 <= y0:
        raise BoxError(f"empty region: box {list(box)} (xyxy) has no area")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise BoxError(f"box {list(box)} (xyxy) lies outside the {width}x{height} {frame}")
    return max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))


@dataclass(frozen=True, eq=False)
class Region:
    """A region of attention (ROA): one or more boxes (xyxy pixels) and, optionally, a pixel mask.

    Several boxes make one ROA (e.g. every dog of an image): the foveal bias is the element-wise max
    of the per-box biases, RedCircle draws every ellipse, Blur/Grayscale keep every box, Crop takes
    their bounding box. A ``mask`` (bool ``(H, W)`` array in the same pixels) restricts the ROA to the
    patch tokens it covers; the boxes still place the Gaussian and the edits.
    """

    boxes: tuple[Box, ...]
    mask: Any = None

    @classmethod
    def of(cls, value: "Region | Sequence[float] | Sequence[Sequence[float]]") -> "Region":
        """A :class:`Region` from a region, one xyxy box, or a sequence of boxes."""
        if isinstance(value, Region):
            return value
        if len(value) and all(isinstance(v, (int, float)) for v in value):
            return cls((tuple(float(v) for v in value),))  # one box (validated where it is used)
        if not len(value):
            raise BoxError("a region needs at least one box")
        return cls(tuple(tuple(float(v) for v in box) for box in value))

    def bounding_box(self) -> Box:
        x0s, y0s, x1s, y1s = zip(*self.boxes)
        return min(x0s), min(y0s), max(x1s), max(y1s)

    def clipped(self, width: float, height: float) -> "Region":
        """Every box clipped to the image (:func:`clip_box_to_image`: an unusable box raises)."""
        return Region(tuple(clip_box_to_image(box, width, height) for box in self.boxes), self.mask)

    def num_clipped(self, width: float, height: float) -> int:
        """How many boxes stick out of a ``width x height`` image."""
        return sum(clip_box_to_image(box, width, height) != tuple(float(v) for v in box) for box in self.boxes)

    def shifted(self, dx: float, dy: float, width: float, height: float) -> "Region":
        """The region in a frame whose origin is at ``(dx, dy)`` of this one and ``width x height`` big
        (a crop): boxes moved and clipped to it (a box left outside is dropped), mask cut likewise."""
        boxes = []
        for x0, y0, x1, y1 in self.boxes:
            moved = (max(x0 - dx, 0.0), max(y0 - dy, 0.0), min(x1 - dx, float(width)), min(y1 - dy, float(height)))
            if moved[2] > moved[0] and moved[3] > moved[1]:
                boxes.append(moved)
        if not boxes:
            raise BoxError(f"region {list(self.boxes)} falls outside the {width}x{height} crop")
        mask = None
        if self.mask is not None:
            left, top = int(round(dx)), int(round(dy))
            mask = np.zeros((int(height), int(width)), dtype=bool)
            part = np.asarray(self.mask)[max(top, 0):top + int(height), max(left, 0):left + int(width)]
            mask[max(-top, 0):max(-top, 0) + part.shape[0], max(-left, 0):max(-left, 0) + part.shape[1]] = part
        return Region(tuple(boxes), mask)


@dataclass(frozen=True)
class ResizeGeometry:
    """Where an image of ``image_width x image_height`` lands in a square input of ``input_size``.

    The image is resized to ``resized_width x resized_height`` and then the window starting at
    ``(crop_left, crop_top)`` of size ``input_size`` is kept (no window for ``squash``).
    """

    image_width: int
    image_height: int
    input_size: int
    resized_width: int
    resized_height: int
    crop_left: int
    crop_top: int

    @property
    def scale_x(self) -> float:
        return self.resized_width / self.image_width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.image_height

    def box_to_input(self, box: Sequence[float]) -> Box:
        """Map an xyxy box in original-image pixels to model-input pixels, clipped to the input.

        Raises :class:`BoxError` when nothing of the box is left (e.g. a box wholly outside the
        center crop), so callers see why a region cannot be attended to.
        """
        x0, y0, x1, y1 = clip_box_to_image(box, self.image_width, self.image_height)
        mapped = (
            x0 * self.scale_x - self.crop_left,
            y0 * self.scale_y - self.crop_top,
            x1 * self.scale_x - self.crop_left,
            y1 * self.scale_y - self.crop_top,
        )
        size = float(self.input_size)
        clipped = (max(mapped[0], 0.0), max(mapped[1], 0.0), min(mapped[2], size), min(mapped[3], size))
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            raise BoxError(
                f"box {list(box)} falls outside the model input after the "
                f"{'center crop' if self.crop_left or self.crop_top else 'resize'} "
                f"(image {self.image_width}x{self.image_height} -> {self.input_size}px)"
            )
        return clipped

    def region_to_input(self, region: Region) -> Region:
        """A region's boxes (:meth:`box_to_input`) and mask (nearest-neighbour, like the pixels) in model-input pixels."""
        boxes = tuple(self.box_to_input(box) for box in region.boxes)
        mask = None
        if region.mask is not None:
            array = np.asarray(region.mask, dtype=bool)
            if array.shape != (self.image_height, self.image_width):
                raise BoxError(f"region mask is {array.shape[1]}x{array.shape[0]} but the image is "
                               f"{self.image_width}x{self.image_height}")
            resized = Image.fromarray(array.astype(np.uint8) * 255).resize(
                (self.resized_width, self.resized_height), Image.NEAREST)
            left, top, size = self.crop_left, self.crop_top, self.input_size
            mask = np.asarray(resized.crop((left, top, left + size, top + size))) > 0
        return Region(boxes, mask)


def resize_geometry(image_width: int, image_height: int, input_size: int, mode: str = "squash") -> ResizeGeometry:
    """The resize (+ crop) that ``mode`` applies to an image.

    * ``squash``: the whole image is resized to ``input_size x input_size`` (aspect not kept) --
      the ReCLIP / released-FALIP harness default.
    * ``crop``: CLIP's own preprocessing: shortest side -> ``input_size`` (long side
      ``int(input_size * long / short)``, as torchvision), then a centred ``input_size`` crop with
      offset ``int(round((resized - input_size) / 2))``.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    if image_width <= 0 or image_height <= 0:
        raise ValueError(f"image has no pixels ({image_width}x{image_height})")
    if mode == "squash":
        return ResizeGeometry(image_width, image_height, input_size, input_size, input_size, 0, 0)
    if image_width <= image_height:
        new_w, new_h = input_size, int(input_size * image_height / image_width)
    else:
        new_w, new_h = int(input_size * image_width / image_height), input_size
    left = int(round((new_w - input_size) / 2.0))
    top = int(round((new_h - input_size) / 2.0))
    return ResizeGeometry(image_width, image_height, input_size, new_w, new_h, left, top)


def resize_to_input(image: Image.Image, geometry: ResizeGeometry, resample: int = Image.BICUBIC) -> Image.Image:
    """Apply ``geometry`` to a PIL image (``resample``: bicubic by default, like CLIP's preprocessing) ->
    ``input_size`` square."""
    if image.size != (geometry.image_width, geometry.image_height):
        raise ValueError(f"image is {image.size}, geometry was computed for "
                         f"{(geometry.image_width, geometry.image_height)}")
    if image.size != (geometry.resized_width, geometry.resized_height):
        image = image.resize((geometry.resized_width, geometry.resized_height), resample)
    if geometry.crop_left or geometry.crop_top or image.size != (geometry.input_size,) * 2:
        left, top, size = geometry.crop_left, geometry.crop_top, geometry.input_size
        image = image.crop((left, top, left + size, top + size))
    return image
