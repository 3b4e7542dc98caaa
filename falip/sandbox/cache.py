"""Where generated sandbox datasets are cached: ``$FALIP_CACHE`` or ``~/.cache/falip``."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("FALIP_CACHE") or Path.home() / ".cache" / "falip").expanduser()
