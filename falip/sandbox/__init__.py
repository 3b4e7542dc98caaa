"""The offline sandbox: procedural scenes, their datasets in real formats, and the tiny CLIP trained on them."""
from pathlib import Path

# The shipped sandbox CLIP (a HF CLIP folder: config, safetensors, tokenizer, preprocessor, model card).
MODEL_DIR = Path(__file__).resolve().parent / "model"
