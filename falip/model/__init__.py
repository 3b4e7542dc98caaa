"""The model layer: the vision-tower contract, HF CLIP behind it, steering per call, FoveatedCLIP, the foveal bias."""
from .bias import bias_from_token_weights, foveal_attention_bias, foveal_token_weights, roa_cells
from .clip import CheckpointNotFoundError, FoveatedCLIP
from .steering import EXACT, FULL_ROWS, ExecutionPlan, Steering, encode_steered
from .tower import VisionTower

__all__ = ["FoveatedCLIP", "CheckpointNotFoundError", "foveal_attention_bias", "foveal_token_weights",
           "bias_from_token_weights", "roa_cells", "VisionTower", "Steering", "ExecutionPlan", "EXACT", "FULL_ROWS",
           "encode_steered"]
