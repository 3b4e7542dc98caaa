"""Visual prompts: every compared method as data (image edits + an optional foveal attention bias)."""
from .config import prompt_from_config, prompts_from_config
from .edits import EDITS, BlurOutside, Crop, GrayscaleOutside, ImageEdit, RedCircle
from .prompt import (BLUR, CROP, FALIP, GRAYSCALE, ORIGINAL_CLIP, RED_CIRCLE, RED_CIRCLE_FALIP, FovealBias,
                     VisualPrompt)

__all__ = ["VisualPrompt", "FovealBias", "ImageEdit", "RedCircle", "BlurOutside", "GrayscaleOutside", "Crop", "EDITS",
           "prompt_from_config", "prompts_from_config", "ORIGINAL_CLIP", "FALIP", "RED_CIRCLE", "RED_CIRCLE_FALIP",
           "BLUR", "CROP", "GRAYSCALE"]
