"""Files written so that a crash never leaves half a file behind, and where generated data is cached."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, payload: Mapping[str, Any] | list) -> Path:
    """Atomically write ``payload`` as indented JSON (non-JSON values via ``str``)."""
    return atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def cache_root() -> Path:
    """Where generated datasets (and other derived files) are cached: ``$FALIP_CACHE`` or ``~/.cache/falip``."""
    return Path(os.environ.get("FALIP_CACHE") or Path.home() / ".cache" / "falip").expanduser()
