"""Result tables: one row per prompt, one column per split or setting, accuracy in %.

Paper numbers live only in ``falip/paper/*.csv`` (package data); combined tables show them as
separate rows whose ``source`` column says ``paper (reference)``, never mixed into measured rows, and
whose ``model`` column names the backbone each row was measured with.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from ..errors import DatasetError
from ..io import atomic_write_text

MEASURED = "measured"
PAPER = "paper (reference)"
DELTA = "ours - paper"


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


PAPER_DIR = Path(__file__).resolve().parents[1] / "paper"


def paper_reference_path(name: str | Path) -> Path:
    """A paper reference table: an existing path, else ``falip/paper/<name>`` (shipped with the package)."""
    path = Path(name)
    return path if path.is_file() else PAPER_DIR / path.name


def reference_caption(name: str | Path) -> str:
    """The first comment line of a reference table (what it is and where it was read)."""
    for line in paper_reference_path(name).read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return str(name)


def paper_table(name: str | Path) -> pd.DataFrame:
    """A paper reference table (``falip/paper/<name>.csv``; ``#`` lines are comments citing the source)."""
    path = paper_reference_path(name)
    if not path.is_file():
        raise DatasetError(f"paper reference table {name} not found (shipped: {sorted(p.name for p in PAPER_DIR.glob('*.csv'))}; "
                           f"report.paper_csv may also be a path)")
    return pd.read_csv(path, index_col=0, comment="#")


def combine_with_paper(measured: pd.DataFrame, paper: pd.DataFrame, measured_model: str = "",
                       paper_model: str = "", tag: str = "paper") -> pd.DataFrame:
    """Measured rows, then the reference rows (``<name> [<tag>]``), with ``source`` (measured / reference) and
    ``model`` columns. ``tag`` ``paper``: the FALIP paper's rows; another tag (e.g. ``reference``) for rows read
    from other methods' sources, each row naming its own backbone."""
    ours = measured.copy()
    ours.insert(0, "source", MEASURED)
    ours.insert(1, "model", measured_model)
    theirs = paper.reindex(columns=measured.columns).copy()
    theirs.insert(0, "source", PAPER if tag == "paper" else f"{tag} (not measured here)")
    theirs.insert(1, "model", paper_model)
    theirs.index = [f"{name} [{tag}]" for name in theirs.index]
    combined = pd.concat([ours, theirs])
    combined.index.name = "prompt"
    return combined
