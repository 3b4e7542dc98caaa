"""Small helpers shared by the benchmark scripts: interleaved timing and CSV rows with provenance."""
from __future__ import annotations

import csv
import io
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..io import atomic_write_text


def interleaved_medians(functions: Sequence[Callable[[], object]], repeats: int, warmup: int = 1) -> list[float]:
    """Median wall seconds of each function, run in alternating order so drift hits all equally."""
    for _ in range(warmup):
        for function in functions:
            function()
    times: list[list[float]] = [[] for _ in functions]
    for repeat in range(repeats):
        order = range(len(functions)) if repeat % 2 == 0 else reversed(range(len(functions)))
        for index in order:
            start = time.perf_counter()
            functions[index]()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[index].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def environment_columns() -> dict[str, str]:
    return {
        "device": "cuda:" + torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})",
        "torch_threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def write_rows(path: str | Path, rows: list[dict]) -> Path:
    """Write rows (dicts with the same keys) as CSV, atomically, creating the folder."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())
