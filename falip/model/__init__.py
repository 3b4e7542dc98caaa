"""The model layer: FoveatedCLIP over any HF CLIP, the foveal bias it takes, and models for tests."""
from .bias import bias_from_token_weights, foveal_attention_bias, foveal_token_weights, roa_cells
from .clip import CheckpointNotFoundError, FoveatedCLIP

__all__ = ["FoveatedCLIP", "CheckpointNotFoundError", "foveal_attention_bias", "foveal_token_weights",
           "bias_from_token_weights", "roa_cells"]
