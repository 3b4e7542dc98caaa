"""Procedural scenes for the sandbox: coloured shapes on a noisy background, with exact boxes and masks.

A scene has 1-4 objects, each a shape (circle, square, triangle, cross) in a colour (red, green,
blue, yellow, purple); no two objects of a scene share (colour, shape), and their boxes are disjoint
with a margin. Everything is drawn from a ``numpy.random.Generator``, so a seed fixes the scene.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 175, 60),
    "blue": (45, 75, 230),
    "yellow": (235, 210, 40),
    "purple": (150, 55, 195),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
CLASSES: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)


def expression(colour: str, shape: str) -> str:
    """The referring expression of an object: ``"red circle"``."""
    return f"{colour} {shape}"


CLASS_NAMES: tuple[str, ...] = tuple(expression(c, s) for c, s in CLASSES)


@dataclass
class SceneObject:
    shape: str
    colour: str
    box: tuple[float, float, float, float]   # xyxy, tight around the mask: x1 = last column + 1
    mask: np.ndarray = field(repr=False)     # bool (H, W)

    @property
    def expression(self) -> str:
        return expression(self.colour, self.shape)

    @property
    def label(self) -> int:
        return CLASSES.index((self.colour, self.shape))


@dataclass
class Scene:
    image: Image.Image
    objects: list[SceneObject]


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A low-saturation base colour with a smooth gradient and per-pixel noise."""
    base = rng.uniform(70, 170) + rng.uniform(-12, 12, size=3)
    gradient = np.linspace(-1, 1, width)[None, :, None] * rng.uniform(-20, 20, size=3)
    gradient = gradient + np.linspace(-1, 1, height)[:, None, None] * rng.uniform(-20, 20, size=3)
    noise = rng.normal(0, rng.uniform(6, 16), size=(height, width, 3))
    return np.clip(base + gradient + noise, 0, 255)


def _shape_mask(shape: str, width: int, height: int, x: int, y: int, size: int) -> np.ndarray:
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    x1, y1 = x + size - 1, y + size - 1
    if shape == "circle":
        draw.ellipse([x, y, x1, y1], fill=255)
    elif shape == "square":
        inset = max(1, size // 10)
        draw.rectangle([x + inset, y + inset, x1 - inset, y1 - inset], fill=255)
    elif shape == "triangle":
        draw.polygon([(x + (size - 1) / 2, y), (x1, y1), (x, y1)], fill=255)
    elif shape == "cross":
        arm = max(2, round(size / 3))
        start = x + (size - arm) // 2
        top = y + (size - arm) // 2
        draw.rectangle([start, y, start + arm - 1, y1], fill=255)
        draw.rectangle([x, top, x1, top + arm - 1], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; shapes: {SHAPES}")
    return np.asarray(canvas) > 0


def _tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def generate_scene(rng: np.random.Generator, num_objects: int, width: int = 64, height: int = 64,
                   min_size: float = 0.18, max_size: float = 0.32, margin: int = 2,
                   colour_jitter: int = 18, max_tries: int = 200, classes=None) -> Scene:
    """A scene with ``num_objects`` (1-4) distinct objects; sizes are fractions of the short side.

    ``classes`` (indices into :data:`CLASSES`, one per object) chooses the objects instead of the
    random draw; repeats are then allowed (several objects of one class). Raises ``RuntimeError``
    when the objects cannot be placed without overlap (too many / too big).
    """
    if not 1 <= num_objects <= len(CLASSES):
        raise ValueError(f"num_objects must be in 1..{len(CLASSES)}, got {num_objects}")
    short = min(width, height)
    pixels = _background(rng, width, height)
    if classes is None:
        classes = rng.choice(len(CLASSES), size=num_objects, replace=False)
    elif len(classes) != num_objects:
        raise ValueError(f"classes names {len(classes)} objects, num_objects is {num_objects}")
    placed: list[tuple[int, int, int, int]] = []
    objects: list[SceneObject] = []
    for class_index in classes:
        colour, shape = CLASSES[int(class_index)]
        for _ in range(max_tries):
            size = int(rng.integers(max(4, round(min_size * short)), max(5, round(max_size * short)) + 1))
            x = int(rng.integers(0, width - size + 1))
            y = int(rng.integers(0, height - size + 1))
            if all(x + size + margin <= px or px + ps + margin <= x or y + size + margin <= py or py + ps + margin <= y
                   for px, py, ps, _ in placed):
                break
        else:
            raise RuntimeError(f"could not place {num_objects} objects on a {width}x{height} canvas")
        placed.append((x, y, size, int(class_index)))
        mask = _shape_mask(shape, width, height, x, y, size)
        rgb = np.clip(np.array(COLOURS[colour]) + rng.integers(-colour_jitter, colour_jitter + 1, size=3), 0, 255)
        pixels[mask] = rgb + rng.normal(0, 4, size=(int(mask.sum()), 3))
        objects.append(SceneObject(shape, colour, _tight_box(mask), mask))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return Scene(image, objects)
