"""What every experiment shares: loading the model from config, and the record of a run.

:class:`ExperimentRecord` writes ``<output_dir>/<experiment>.csv`` (rows = prompts, columns =
splits/settings) and ``<output_dir>/<experiment>.json`` (resolved config, model + weights hash,
dataset sizes and notes, forward counts, wall times, package version, git sha) after *every*
finished column, so a crash or a bad sample in a later split never loses finished work. With
``run.resume=true`` a column already finished under the same config is reused, not recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Mapping, Sequence

from .clip import FoveatedCLIP
from .provenance import environment, git_state, utc_now, weights_fingerprint
from .tables import accuracy_table, write_csv

# Run options that change how a run goes, not what it computes: left out of the config hash.
NON_SEMANTIC_RUN_KEYS = {"progress", "num_workers", "prefetch_images", "resume", "output_dir", "save_predictions", "batch_size"}


def load_model(model_cfg: Mapping[str, Any], run_cfg: Mapping[str, Any]) -> FoveatedCLIP:
    """``model.path`` (a local directory) wins over ``model.name`` (a HF Hub id, read from the HF cache offline)."""
    source = model_cfg.get("path") or model_cfg.get("name")
    if not source:
        raise ValueError("set model.name (a HF Hub id) or model.path (a local CLIP directory)")
    return FoveatedCLIP.from_pretrained(source, device=run_cfg.get("device", "auto"),
                                        dtype=run_cfg.get("dtype", "float32"),
                                        attn_implementation=model_cfg.get("attn_implementation", "sdpa"))


def config_hash(config: Mapping[str, Any]) -> str:
    semantic = dict(config)
    semantic["run"] = {k: v for k, v in dict(config.get("run", {})).items() if k not in NON_SEMANTIC_RUN_KEYS}
    return hashlib.sha256(json.dumps(semantic, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


class ExperimentRecord:
    """The table and JSON sidecar of one run, rewritten after every finished column."""

    def __init__(self, name: str, config: Mapping[str, Any], output_dir: str | Path, row_order: Sequence[str],
                 model: FoveatedCLIP | None = None, resume: bool = False):
        self.name, self.config, self.row_order = name, dict(config), list(row_order)
        self.output_dir = Path(output_dir)
        self.csv_path = self.output_dir / f"{name}.csv"
        self.json_path = self.output_dir / f"{name}.json"
        self.work_dir = self.output_dir / name
        self.hash = config_hash(self.config)
        self.resume = resume
        self.columns: dict[str, dict[str, float]] = {}
        self.details: dict[str, dict] = {}
        self._started, self._clock = utc_now(), time.perf_counter()
        self.model_info = self._describe(model) if model is not None else None
        self.extra: dict[str, Any] = {}

    @staticmethod
    def _describe(model: FoveatedCLIP) -> dict[str, Any]:
        return {"source": model.source, "weights_sha256": weights_fingerprint(model.clip),
                "attn_implementation": model.attn_implementation, "dtype": str(model.dtype).replace("torch.", ""),
                "device": str(model.device), "image_size": model.image_size, "patch_size": model.patch_size,
                "vision_layers": model.num_layers, "logit_scale": round(model.logit_scale, 6)}

    def column_path(self, column: str) -> Path:
        safe = "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in column)
        return self.work_dir / "columns" / f"{safe}.json"

    def predictions_path(self, column: str) -> Path:
        path = self.column_path(column)
        path = path.parent.parent / "predictions" / (path.stem + ".jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def cached(self, column: str) -> bool:
        """With resume on, reuse a column this config already finished (returns True if it did)."""
        path = self.column_path(column)
        if not (self.resume and path.is_file()):
            return False
        saved = json.loads(path.read_text())
        if saved.get("config_hash") != self.hash:
            return False
        self.columns[column], self.details[column] = saved["values"], {**saved["details"], "resumed": True}
        self._save("running")
        return True

    def add_column(self, column: str, values: Mapping[str, float], details: Mapping[str, Any]) -> None:
        self.columns[column], self.details[column] = dict(values), dict(details)
        _write_json(self.column_path(column), {"config_hash": self.hash, "values": dict(values),
                                               "details": dict(details)})
        self._save("running")

    def table(self):
        return accuracy_table(self.columns, self.row_order)

    def finish(self) -> None:
        self._save("complete")

    def fail(self, error: BaseException) -> None:
        self.extra["error"] = "".join(traceback.format_exception_only(type(error), error)).strip()
        self._save("failed")

    def _save(self, status: str) -> None:
        if self.columns:
            write_csv(self.table(), self.csv_path)
        forwards = {column: details.get("image_forwards") for column, details in self.details.items()}
        payload = {
            "experiment": self.name, "status": status, "started": self._started, "updated": utc_now(),
            "wall_time_s": round(time.perf_counter() - self._clock, 3),
            "command": " ".join(sys.argv), "config_hash": self.hash, "config": self.config,
            "model": self.model_info, "table": self.columns, "columns": self.details,
            "counts": {"image_forwards": forwards,
                       "total_image_forwards": sum(sum(v.values()) for v in forwards.values() if v)},
            "code": {**git_state(), "falip": environment()["falip"]}, "environment": environment(),
            **self.extra,
        }
        _write_json(self.json_path, payload)
