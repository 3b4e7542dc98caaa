"""Finding a dataset's folder: ``dataset.root`` may name the folder itself or its parent."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable


def first_folder(candidates: Iterable[Path], holds: Callable[[Path], bool]) -> Path | None:
    """The first candidate folder for which ``holds(folder)`` is true (e.g. it has the layout's index
    file), or ``None``; the caller raises its own dataset-specific error."""
    return next((folder for folder in candidates if holds(folder)), None)
