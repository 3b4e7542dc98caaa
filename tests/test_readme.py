"""The README's Python example runs as written (with the shipped sandbox model and a generated image)."""
import re
from pathlib import Path

import numpy as np

from falip.sandbox import MODEL_DIR as SANDBOX_MODEL_DIR
from falip.sandbox.scenes import generate_scene

README = Path(__file__).parent.parent / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    block = re.search(r"## Python API\s+```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert '"openai/clip-vit-base-patch16"' in block and '"street.jpg"' in block
    generate_scene(np.random.default_rng(0), 3, 420, 320).image.save(tmp_path / "street.jpg")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(block.replace('"openai/clip-vit-base-patch16"', repr(str(SANDBOX_MODEL_DIR))), namespace)
    assert namespace["regions"].shape == (2, 128) and namespace["best_box"] in namespace["boxes"]
