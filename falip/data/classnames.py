"""Class names from config: a text file (one name per line, label order) or a list; always distinct.

Two classes with the same name tie in every zero-shot score, and the first always wins: every sample of
the second is counted wrong without a word. So every class list a run uses goes through
:func:`check_distinct`, and ``dataset.classnames`` is read here once, for every dataset family.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from ..errors import DatasetError


def check_distinct(names: Sequence[str], where: str) -> list[str]:
    """``names`` if no two are equal (after trimming and case-folding); else a one-line error naming them."""
    counts = Counter(name.strip().casefold() for name in names)
    repeated = {name: [i for i, other in enumerate(names) if other.strip().casefold() == name]
                for name, count in counts.items() if count > 1}
    if repeated:
        listing = "; ".join(f"{name!r} at labels {labels}" for name, labels in list(repeated.items())[:5])
        raise DatasetError(f"{where} repeats class names ({listing}): their zero-shot scores tie and the first label "
                           f"always wins; give every class its own name (dataset.classnames=<txt or list>)")
    return list(names)


def class_names_from(value: Any, key: str = "dataset.classnames") -> list[str] | None:
    """``value`` of ``key`` as class names: ``None`` (unset) -> None; a list of names; or the path of a text
    file with one name per line. Empty values, empty names and duplicates are one-line errors."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        names = [str(name).strip() for name in value]
        where = f"{key} (a list)"
        if any(not isinstance(name, (str, int, float)) for name in value) or any(not name for name in names):
            raise DatasetError(f"{key} lists an empty or non-text name: give one non-empty name per class")
    elif isinstance(value, (str, Path)):
        if not str(value).strip():
            raise DatasetError(f"{key} is empty: give a text file (one name per line, in label order) or a list "
                               f"[name0, name1, ...], or leave it unset (null)")
        path = Path(value)
        if not path.is_file():
            raise DatasetError(f"{key}={value} is not a file (one class name per line, in label order) or a list")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        where = f"{key}={value}"
    else:
        raise DatasetError(f"{key}={value!r} is neither a text file nor a list of names")
    if not names:
        raise DatasetError(f"{where} holds no class names")
    return check_distinct(names, where)
