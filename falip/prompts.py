"""Visual prompts as data: an image edit chain + an optional attention bias.

Every method the paper compares is a :class:`VisualPrompt`:

====================  ===================================  ===============
prompt                edits                                bias
====================  ===================================  ===============
Original CLIP         --                                   --
FALIP                 --                                   FovealBias()
RedCircle             RedCircle()                          --
RedCircle+FALIP       RedCircle()                          FovealBias()
Blur                  BlurOutside()                        --
Crop                  Crop()                               --
Grayscale             GrayscaleOutside()                   --
====================  ===================================  ===============

Tasks never branch on a prompt's name: they hand (image, boxes, prompt) to
:func:`falip.regions.prepare_regions`. Configs build prompts with :func:`prompt_from_config`
from registry names (``edits: [{name: red_circle}]``, ``bias: {name: foveal, alpha: 0.2}``).

Edit recipes follow the released FALIP / ReCLIP code: red ellipse outline inscribed in the box,
line width ``int(max(W, H) / 200)``, drawn on the original-resolution image; blur = PIL Gaussian
blur of radius (std) 100 with the original pasted back inside the region; crop = PIL crop of the box.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Mapping, Sequence

import torch
from PIL import Image, ImageDraw, ImageFilter

from .bias import CELL_RULES, FORMULATIONS, foveal_attention_bias
from .geometry import Box

Edited = tuple[Image.Image, Box]


def _region_mask(size: tuple[int, int], box: Box, shape: str) -> Image.Image:
    """An 'L' mask, 255 inside the box (``shape="box"``) or its inscribed ellipse."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    corners = [tuple(box[:2]), tuple(box[2:])]
    (draw.rectangle if shape == "box" else draw.ellipse)(corners, fill=255)
    return mask


def _check_shape(shape: str) -> None:
    if shape not in ("box", "ellipse"):
        raise ValueError(f"region shape must be 'box' or 'ellipse', got {shape!r}")


class ImageEdit:
    """Base class: edits the image for each box; returns the edited image and the box in its frame."""

    name: ClassVar[str] = ""
    region_dependent: ClassVar[bool] = True

    def apply(self, image: Image.Image, boxes: Sequence[Box]) -> list[Edited]:
        return [self.apply_one(image, box) for box in boxes]

    def apply_one(self, image: Image.Image, box: Box) -> Edited:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}  # type: ignore[call-overload]


@dataclass(frozen=True)
class RedCircle(ImageEdit):
    """RedCircle (Shtedritski et al. 2023): an ellipse outline inscribed in the box.

    ``width=None`` uses the released code's ``int(max(W, H) / 200)``, floored at 1 px (PIL draws
    nothing for width 0, which the released formula gives for images under 200 px).
    """

    name: ClassVar[str] = "red_circle"
    color: tuple[int, int, int] = (255, 0, 0)
    width: int | None = None

    def apply_one(self, image: Image.Image, box: Box) -> Edited:
        edited = image.copy()
        width = self.width if self.width is not None else max(1, int(max(image.size) / 200))
        ImageDraw.Draw(edited).ellipse([tuple(box[:2]), tuple(box[2:])], outline=tuple(self.color), width=width)
        return edited, box


class _ReplaceOutside(ImageEdit):
    """Edits that keep the region and show a transformed copy of the image everywhere else."""

    shape: str

    def __post_init__(self) -> None:
        _check_shape(self.shape)

    def background(self, image: Image.Image) -> Image.Image:
        raise NotImplementedError

    def apply(self, image: Image.Image, boxes: Sequence[Box]) -> list[Edited]:
        background = self.background(image)  # once per image, not per box
        return [self._paste(background, image, box) for box in boxes]

    def apply_one(self, image: Image.Image, box: Box) -> Edited:
        return self._paste(self.background(image), image, box)

    def _paste(self, background: Image.Image, image: Image.Image, box: Box) -> Edited:
        edited = background.copy()
        edited.paste(image, mask=_region_mask(image.size, box, self.shape))
        return edited, box


@dataclass(frozen=True)
class BlurOutside(_ReplaceOutside):
    """Gaussian-blur the image outside the region (ReCLIP's blur: radius 100, region = box)."""

    name: ClassVar[str] = "blur"
    radius: float = 100.0
    shape: str = "box"

    def background(self, image: Image.Image) -> Image.Image:
        return image.filter(ImageFilter.GaussianBlur(self.radius))


@dataclass(frozen=True)
class GrayscaleOutside(_ReplaceOutside):
    """Grayscale outside the region (FGVP's grayscale prompt; region = the inscribed ellipse)."""

    name: ClassVar[str] = "grayscale"
    shape: str = "ellipse"

    def background(self, image: Image.Image) -> Image.Image:
        return image.convert("L").convert("RGB")


@dataclass(frozen=True)
class Crop(ImageEdit):
    """Crop the box (PIL rounds the coordinates); the region becomes the whole cropped image."""

    name: ClassVar[str] = "crop"

    def apply_one(self, image: Image.Image, box: Box) -> Edited:
        cropped = image.crop(tuple(box))
        return cropped, (0.0, 0.0, float(cropped.width), float(cropped.height))


EDITS: dict[str, type[ImageEdit]] = {cls.name: cls for cls in (RedCircle, BlurOutside, GrayscaleOutside, Crop)}


@dataclass(frozen=True)
class FovealBias:
    """FALIP's foveal attention bias, as configured data.

    ``layers``: vision layers that get the bias (negative = from the end; ``None`` = all). The
    released FALIP code biases the last 4 of ViT-B/16's 12 layers, the paper text says "the MSA
    module" (read: all layers) -- both are a config value. ``cell_rule``: see :func:`falip.bias.roa_cells`.
    """

    name: ClassVar[str] = "foveal"
    alpha: float = 0.2
    sigma: float = 100.0
    formulation: str = "cls"
    layers: tuple[int, ...] | None = (-4, -3, -2, -1)
    cell_rule: str = "overlap"
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.formulation not in FORMULATIONS:
            raise ValueError(f"bias formulation must be one of {FORMULATIONS}, got {self.formulation!r}")
        if self.cell_rule not in CELL_RULES:
            raise ValueError(f"bias cell_rule must be one of {CELL_RULES}, got {self.cell_rule!r}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(layer) for layer in self.layers))

    def build(self, input_boxes: Sequence[Box], image_size: int, patch_size: int) -> torch.Tensor:
        """``(K, T, T)`` float32 bias for K boxes given in model-input pixels."""
        return foveal_attention_bias(list(input_boxes), image_size, patch_size, alpha=self.alpha, sigma=self.sigma,
                                     eps=self.eps, formulation=self.formulation, cell_rule=self.cell_rule)

    def config(self) -> dict[str, Any]:
        values = asdict(self)
        values["layers"] = list(self.layers) if self.layers is not None else None
        return {"name": self.name, **values}


BIASES: dict[str, type[FovealBias]] = {FovealBias.name: FovealBias}


@dataclass(frozen=True)
class VisualPrompt:
    """A named (edit chain, attention bias) pair: how a region is shown to CLIP."""

    name: str
    edits: tuple[ImageEdit, ...] = field(default=())
    bias: FovealBias | None = None

    @property
    def edits_depend_on_region(self) -> bool:
        return any(edit.region_dependent for edit in self.edits)

    @property
    def region_dependent(self) -> bool:
        """False for plain CLIP: every region of an image then has the same embedding (one forward)."""
        return self.edits_depend_on_region or self.bias is not None

    def apply_edits(self, image: Image.Image, boxes: Sequence[Box]) -> list[Edited]:
        """Run the edit chain for every box: ``[(edited image, box in its frame), ...]``."""
        results: list[Edited] = [(image, tuple(box)) for box in boxes]
        for edit in self.edits:
            if all(img is image for img, _ in results):  # first region-dependent edit: share per-image work
                results = edit.apply(image, [box for _, box in results])
            else:
                results = [edit.apply_one(img, box) for img, box in results]
        return results

    def config(self) -> dict[str, Any]:
        return {"edits": [edit.config() for edit in self.edits],
                "bias": self.bias.config() if self.bias is not None else None}


def _build(registry: Mapping[str, type], spec: Mapping[str, Any] | str, kind: str, where: str):
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in registry:
        raise ValueError(f"{where}: unknown {kind} {name!r}; known: {sorted(registry)}")
    cls = registry[name]
    known = {f.name for f in fields(cls)}
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"{where}: {kind} {name!r} has no option(s) {sorted(unknown)}; options: {sorted(known)}")
    for key, value in spec.items():
        if isinstance(value, list):
            spec[key] = tuple(value)
    return cls(**spec)


def prompt_from_config(name: str, spec: Mapping[str, Any] | None) -> VisualPrompt:
    """Build a prompt from config data: ``{edits: [<name or {name, ...options}>], bias: {name, ...} | null}``."""
    spec = dict(spec or {})
    unknown = set(spec) - {"edits", "bias"}
    if unknown:
        raise ValueError(f"prompt {name!r}: unknown key(s) {sorted(unknown)}; a prompt has 'edits' and 'bias'")
    edits = tuple(_build(EDITS, edit, "edit", f"prompt {name!r}") for edit in (spec.get("edits") or []))
    bias_spec = spec.get("bias")
    bias = _build(BIASES, bias_spec, "bias", f"prompt {name!r}") if bias_spec else None
    return VisualPrompt(name=name, edits=edits, bias=bias)


def prompts_from_config(specs: Mapping[str, Any]) -> list[VisualPrompt]:
    """Prompts in config order from a mapping ``display name -> spec`` (a null spec = plain CLIP)."""
    return [prompt_from_config(str(name), spec) for name, spec in specs.items()]


# The paper's methods, ready to use from Python.
ORIGINAL_CLIP = VisualPrompt("Original CLIP")
FALIP = VisualPrompt("FALIP", bias=FovealBias())
RED_CIRCLE = VisualPrompt("RedCircle", edits=(RedCircle(),))
RED_CIRCLE_FALIP = VisualPrompt("RedCircle+FALIP", edits=(RedCircle(),), bias=FovealBias())
BLUR = VisualPrompt("Blur", edits=(BlurOutside(),))
CROP = VisualPrompt("Crop", edits=(Crop(),))
GRAYSCALE = VisualPrompt("Grayscale", edits=(GrayscaleOutside(),))
