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


def test_readme_table_is_the_committed_sandbox_table():
    import pandas as pd

    block = re.search(r"committed copy is `results/sandbox/shapes_rec.csv`:\s+```\n(.*?)```", README.read_text(), re.S)
    rows = [line.rsplit(maxsplit=3) for line in block.group(1).strip().splitlines()[1:]]
    committed = pd.read_csv(README.parent / "results" / "sandbox" / "shapes_rec.csv", index_col=0)
    assert [row[0].strip() for row in rows] == list(committed.index)
    for name, *values in rows:
        assert [float(v) for v in values] == committed.loc[name.strip()].tolist(), name
