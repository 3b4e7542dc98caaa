"""FALIP: Foveal-Attention CLIP (ECCV 2024) -- reference implementation and benchmark suite."""
from .encoding.regions import encode_regions
from .encoding.text import TextCache
from .model.bias import bias_from_token_weights, foveal_attention_bias, foveal_token_weights, roa_cells
from .model.clip import CheckpointNotFoundError, FoveatedCLIP
from .model.heads import head_contributions
from .tasks.predict import predict
from .version import __version__

__all__ = [
    "FoveatedCLIP",
    "encode_regions",
    "predict",
    "TextCache",
    "head_contributions",
    "CheckpointNotFoundError",
    "foveal_attention_bias",
    "foveal_token_weights",
    "bias_from_token_weights",
    "roa_cells",
    "__version__",
]
