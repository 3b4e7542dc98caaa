"""Result tables: one row per prompt, one column per split or setting, accuracy in %.

Paper numbers live only in ``results/paper/*.csv``; combined tables show them as separate rows
whose ``source`` column says ``paper (reference)``, never mixed into measured rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from ..io import atomic_write_text

MEASURED = "measured"
PAPER = "paper (reference)"


def accuracy_table(columns: Mapping[str, Mapping[str, float]], row_order: Sequence[str]) -> pd.DataFrame:
    """``columns``: column name -> {prompt -> accuracy}. Rows follow ``row_order``; missing cells are NaN."""
    frame = pd.DataFrame({column: {row: values.get(row) for row in row_order} for column, values in columns.items()},
                         index=list(row_order), dtype=float)
    frame.index.name = "prompt"
    return frame


def write_csv(frame: pd.DataFrame, path: str | Path, decimals: int = 2) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves a half-written table."""
    return atomic_write_text(path, frame.round(decimals).to_csv(float_format=f"%.{decimals}f"))


def read_table(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, index_col=0)


def paper_table(path: str | Path) -> pd.DataFrame:
    """A paper reference table (``results/paper/<name>.csv``; ``#`` lines are comments citing the source)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"paper reference table {path} not found (run from the repository root, "
                                f"or point task.paper_csv at it)")
    return pd.read_csv(path, index_col=0, comment="#")


def combine_with_paper(measured: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Measured rows, then the paper's rows, with a ``source`` column saying which is which."""
    ours = measured.copy()
    ours.insert(0, "source", MEASURED)
    theirs = paper.reindex(columns=measured.columns).copy()
    theirs.insert(0, "source", PAPER)
    theirs.index = [f"{name} [paper]" for name in theirs.index]
    combined = pd.concat([ours, theirs])
    combined.index.name = "prompt"
    return combined
