"""FALIP: Foveal-Attention CLIP (ECCV 2024) -- reference implementation and benchmark suite."""
from .bias import bias_from_token_weights, foveal_attention_bias, foveal_token_weights, roa_cells
from .clip import CheckpointNotFoundError, FoveatedCLIP

__version__ = "0.1.0"

__all__ = [
    "FoveatedCLIP",
    "CheckpointNotFoundError",
    "foveal_attention_bias",
    "foveal_token_weights",
    "bias_from_token_weights",
    "roa_cells",
    "__version__",
]
