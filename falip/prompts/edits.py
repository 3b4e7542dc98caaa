"""Image edits: how the pixel-based visual prompts change the image for one region.

Recipes follow the released FALIP / ReCLIP code: red ellipse outline inscribed in the box, line width
``int(max(W, H) / 200)``, drawn on the original-resolution image; blur = PIL Gaussian blur of radius
(std) 100 with the original pasted back inside the region; crop = PIL crop of the box.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Sequence

from PIL import Image, ImageDraw, ImageFilter

from ..geometry import Box, Region

Edited = tuple[Image.Image, Region]


def _region_mask(size: tuple[int, int], region: Region, shape: str) -> Image.Image:
    """An 'L' mask, 255 inside every box of the region (``shape="box"``) or their inscribed ellipses."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for box in region.boxes:
        corners = [tuple(box[:2]), tuple(box[2:])]
        (draw.rectangle if shape == "box" else draw.ellipse)(corners, fill=255)
    return mask


def _check_shape(shape: str) -> None:
    if shape not in ("box", "ellipse"):
        raise ValueError(f"region shape must be 'box' or 'ellipse', got {shape!r}")


class ImageEdit:
    """Base class: edits the image for each region; returns the edited image and the region in its frame."""

    name: ClassVar[str] = ""

    def apply(self, image: Image.Image, regions: Sequence[Region | Box]) -> list[Edited]:
        return [self.apply_one(image, region) for region in regions]

    def apply_one(self, image: Image.Image, region: Region | Box) -> Edited:
        """The image edited for ``region`` (a :class:`Region` or one xyxy box) and the region in its frame."""
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

    def apply_one(self, image: Image.Image, region: Region | Box) -> Edited:
        region = Region.of(region)
        edited = image.copy()
        width = self.width if self.width is not None else max(1, int(max(image.size) / 200))
        draw = ImageDraw.Draw(edited)
        for box in region.boxes:  # every box of the region gets its ellipse
            draw.ellipse([tuple(box[:2]), tuple(box[2:])], outline=tuple(self.color), width=width)
        return edited, region


class _ReplaceOutside(ImageEdit):
    """Edits that keep the region and show a transformed copy of the image everywhere else."""

    shape: str

    def __post_init__(self) -> None:
        _check_shape(self.shape)

    def background(self, image: Image.Image) -> Image.Image:
        raise NotImplementedError

    def apply(self, image: Image.Image, regions: Sequence[Region | Box]) -> list[Edited]:
        background = self.background(image)  # once per image, not per region
        return [self._paste(background, image, Region.of(region)) for region in regions]

    def apply_one(self, image: Image.Image, region: Region | Box) -> Edited:
        return self._paste(self.background(image), image, Region.of(region))

    def _paste(self, background: Image.Image, image: Image.Image, region: Region) -> Edited:
        edited = background.copy()
        edited.paste(image, mask=_region_mask(image.size, region, self.shape))
        return edited, region


@dataclass(frozen=True)
class BlurOutside(_ReplaceOutside):
    """Gaussian-blur the image outside the region (ReCLIP's blur: radius 100, region = box)."""

    name: ClassVar[str] = "blur"
    radius: float = 100.0
    shape: str = "box"

    def background(self, image: Image.Image) -> Image.Image:
        return image.filter(ImageFilter.GaussianBlur(self.radius))


GRAY_WEIGHTS = {
    "itu601": (0.299, 0.587, 0.114, 0.0),  # PIL's "L": ITU-R 601 luma of R, G, B
    "fgvp": (0.114, 0.587, 0.299, 0.0),    # FGVP: cv2.COLOR_BGR2GRAY applied to RGB data (red and blue swapped)
}


@dataclass(frozen=True)
class GrayscaleOutside(_ReplaceOutside):
    """Grayscale outside the region (region = the inscribed ellipse, as FGVP's grayscale prompt).

    ``weights``: ``itu601`` (default, PIL's luma) or ``fgvp`` (FGVP's channel weights: it converts RGB data
    with OpenCV's BGR->gray, so red and blue trade weights; values may differ from OpenCV's by one level of
    rounding). FGVP's resize to a 384-px short side before editing is not reproduced."""

    name: ClassVar[str] = "grayscale"
    shape: str = "ellipse"
    weights: str = "itu601"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weights not in GRAY_WEIGHTS:
            raise ValueError(f"grayscale weights={self.weights!r}: expected one of {sorted(GRAY_WEIGHTS)}")

    def background(self, image: Image.Image) -> Image.Image:
        if self.weights == "itu601":
            return image.convert("L").convert("RGB")
        return image.convert("L", matrix=GRAY_WEIGHTS[self.weights]).convert("RGB")


@dataclass(frozen=True)
class Crop(ImageEdit):
    """Crop the region's box (PIL rounds the coordinates); the region is then in the crop's frame."""

    name: ClassVar[str] = "crop"

    def apply_one(self, image: Image.Image, region: Region | Box) -> Edited:
        region = Region.of(region)
        box = region.bounding_box()  # several boxes: the box around all of them
        cropped = image.crop(box)
        if len(region.boxes) == 1 and region.mask is None:  # the crop is the region
            return cropped, Region(((0.0, 0.0, float(cropped.width), float(cropped.height)),))
        left, top = round(box[0]), round(box[1])  # where PIL's crop starts
        return cropped, region.shifted(left, top, cropped.width, cropped.height)


EDITS: dict[str, type[ImageEdit]] = {cls.name: cls for cls in (RedCircle, BlurOutside, GrayscaleOutside, Crop)}
