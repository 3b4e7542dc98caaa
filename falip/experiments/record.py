"""The record of one run: its own folder, its table, its JSON sidecar, and the per-split checkpoints that make
it resumable.

Every run writes into a folder of its own, ``<output_dir>/runs/<experiment>/<run id>/`` -- the id is
``run.name`` when given, else the UTC start time and the config hash's first 8 characters -- so two runs never
overwrite each other. :class:`ExperimentRecord` writes there ``<experiment>.csv`` (rows = prompts, columns =
what each split contributes) and ``<experiment>.json`` (resolved config, model + weights hash, dataset sizes
and notes, forward counts, wall times, package version, git sha) after *every* finished split, so a crash or a
bad sample in a later split never loses finished work; and when the run completes, it publishes both as the
stable ``<output_dir>/<experiment>.csv`` / ``.json`` (atomic replacements: the latest completed run), which the
paper-layout tables read.

With ``run.resume=true`` a run continues the latest run folder of the same config hash (or the ``run.name``
folder), reusing a split already finished under the same config *and the same data* (its digest,
:mod:`falip.experiments.identity`). A run holds a lock on its folder (it names its holder; the kernel releases
it when the process dies), so two processes never write one folder.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ConfigError, DatasetError
from ..io import atomic_write_bytes, folder_lock, holder, process_alive, write_json
from ..model.clip import FoveatedCLIP
from .provenance import code_fingerprint, environment, git_state, utc_now, weights_fingerprint
from .tables import accuracy_table, write_csv

# Run options that change how a run goes, not what it computes: left out of the config hash.
NON_SEMANTIC_RUN_KEYS = {"progress", "num_workers", "prefetch_images", "resume", "output_dir", "save_predictions",
                         "batch_size", "device", "threads", "name"}
RUNS = "runs"  # <output_dir>/runs/<experiment>/<run id>/: one folder per run
# Where the model comes from does not change the numbers; its weights do (hashed instead).
MODEL_LOCATION_KEYS = {"name", "path"}


def config_hash(config: Mapping[str, Any], weights_sha256: str | None = None, code: str | None = None) -> str:
    """A short hash of what determines a run's numbers: the resolved config without the keys that only
    say how the run goes or where things lie (``run.output_dir``, ``model.path`` ...), plus the model's
    weights hash and the code's fingerprint. Resume reuses a split only under the same hash."""
    semantic = dict(config)
    semantic["run"] = {k: v for k, v in dict(config.get("run", {})).items() if k not in NON_SEMANTIC_RUN_KEYS}
    semantic["model"] = {k: v for k, v in dict(config.get("model", {})).items() if k not in MODEL_LOCATION_KEYS}
    semantic["_determined_by"] = {"weights_sha256": weights_sha256, "code": code}
    return hashlib.sha256(json.dumps(semantic, sort_keys=True, default=str).encode()).hexdigest()[:16]


def describe_model(model: FoveatedCLIP) -> dict[str, Any]:
    """What the sidecar says about the model: where it came from, its weights hash and its geometry."""
    return {"source": model.source, "model_type": model.model_type, "weights_sha256": weights_fingerprint(model.clip),
            "attn_implementation": model.attn_implementation, "dtype": str(model.dtype).replace("torch.", ""),
            "device": str(model.device), "image_size": model.image_size, "patch_size": model.patch_size,
            "vision_layers": model.num_layers, "logit_scale": round(model.logit_scale, 6)}


def read_sidecar(path: Path) -> dict:
    """A run's sidecar (``<experiment>.json``) as a dict: ``{}`` when there is none; a file that is not a JSON
    object is a :class:`DatasetError` naming it. The one reader of what :class:`ExperimentRecord` writes."""
    try:
        meta = json.loads(path.read_text()) if path.is_file() and not path.is_symlink() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path} is not a readable sidecar ({error})") from None
    return meta if isinstance(meta, dict) else {}


def effective_status(sidecar: Mapping[str, Any]) -> str:
    """A sidecar's status, with ``running`` read as ``interrupted`` when the process it names is gone
    (killed: SIGKILL, out of memory, a lost node) -- a process on another host counts as still running."""
    status = str(sidecar.get("status", "unknown"))
    if status == "running" and process_alive(sidecar.get("process") or {}) is False:
        return "interrupted"
    return status


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in name)


def runs_folder(output_dir: str | Path, experiment: str) -> Path:
    """Where the run folders of ``experiment`` lie: ``<output_dir>/runs/<experiment>/``."""
    return Path(output_dir) / RUNS / _safe_name(experiment)


def create_run_folder(output_dir: str | Path, experiment: str, config_digest: str, run_name: str | None = None) -> Path:
    """A run's own folder under :func:`runs_folder`: ``run_name`` (created if needed), else a fresh
    ``<UTC time>-<config_digest[:8]>`` created exclusively (a suffix when two runs start in one second)."""
    runs = runs_folder(output_dir, experiment)
    if run_name:
        folder = runs / _safe_name(run_name)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    runs.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{config_digest[:8]}"
    for suffix in range(1, 1000):
        folder = runs / (stem if suffix == 1 else f"{stem}-{suffix}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise OSError(f"could not create a run folder under {runs}")


def latest_run_folder(output_dir: str | Path, experiment: str) -> Path | None:
    """The newest run folder of ``experiment`` under ``output_dir`` (by modification time), or ``None``."""
    folders = [path for path in runs_folder(output_dir, experiment).glob("*")
               if path.is_dir() and not path.is_symlink()]
    return max(folders, key=lambda path: (path.stat().st_mtime_ns, path.name)) if folders else None


class ExperimentRecord:
    """The folder, table and JSON sidecar of one run, rewritten after every finished split."""

    def __init__(self, name: str, config: Mapping[str, Any], output_dir: str | Path, row_order: Sequence[str],
                 model: FoveatedCLIP | None = None, resume: bool = False, writer: bool = True,
                 run_name: str | None = None):
        self.name, self.config, self.row_order = name, dict(config), list(row_order)
        self.output_dir = Path(output_dir)
        self.stable_csv_path = self.output_dir / f"{name}.csv"
        self.stable_json_path = self.output_dir / f"{name}.json"
        self.model_info = describe_model(model) if model is not None else None
        self.code = {**git_state(), "fingerprint": code_fingerprint(), "falip": environment()["falip"]}  # before any write
        self.hash = config_hash(self.config, (self.model_info or {}).get("weights_sha256"), self.code["fingerprint"])
        self.resume, self.run_name = resume, run_name
        self.run_dir: Path | None = None  # chosen by begin() (rank 0), then adopted by every rank
        self.columns: dict[str, dict[str, float]] = {}   # table column -> prompt -> value
        self.splits: dict[str, dict] = {}                # split -> its details (sidecar "columns")
        self._started, self._clock = utc_now(), time.perf_counter()
        self._process = holder()  # host + pid: a later run reads a "running" sidecar whose process is gone as interrupted
        self.extra: dict[str, Any] = {}
        self.writer = writer  # False on the ranks > 0 of a multi-process run: they read, rank 0 writes
        self._lock = contextlib.ExitStack()

    def _in_run(self, name: str) -> Path:
        if self.run_dir is None:
            raise RuntimeError("the run folder is chosen by begin() (and adopted by every rank) before any file is named")
        return self.run_dir / name

    @property
    def csv_path(self) -> Path:
        return self._in_run(f"{self.name}.csv")

    @property
    def json_path(self) -> Path:
        return self._in_run(f"{self.name}.json")

    @property
    def work_dir(self) -> Path:
        return self._in_run("")

    def begin(self) -> Path | None:
        """Choose and claim this run's folder (writer only; the other ranks :meth:`adopt` it): the ``run.name``
        folder; with ``resume``, the latest folder of the same config hash; else a new one. Takes its lock
        (:class:`~falip.io.LockHeld` if a live run holds it) and writes the sidecar at once. Returns the folder."""
        if not self.writer:
            return None
        folder = None if self.run_name or not self.resume else self._latest_of_this_config(
            runs_folder(self.output_dir, self.name))
        folder = folder or create_run_folder(self.output_dir, self.name, self.hash, self.run_name)
        self._lock.enter_context(folder_lock(folder / ".lock", f"{folder} (experiment {self.name})"))
        self.run_dir = folder
        if self.run_name:
            try:
                self._check_named_folder()
            except ConfigError:
                self.release()
                raise
        self._save("running")  # from the start: a kill, a full disk, a lock holder's name all have a sidecar to say so
        return folder

    def adopt(self, run_dir: str | Path) -> None:
        """Use the run folder rank 0 chose (a rank > 0 of a multi-process run)."""
        self.run_dir = Path(run_dir)

    def _latest_of_this_config(self, runs: Path) -> Path | None:
        """The newest run folder (by its time-stamped name) whose sidecar has this run's config hash."""
        candidates = sorted((path for path in runs.glob(f"*-{self.hash[:8]}*") if path.is_dir() and not path.is_symlink()),
                            key=lambda path: path.name)
        for folder in reversed(candidates):
            try:
                if read_sidecar(folder / f"{self.name}.json").get("config_hash") == self.hash:
                    return folder
            except DatasetError:
                continue
        return None

    def _check_named_folder(self) -> None:
        """A ``run.name`` folder is reused only for the same config: resumed (``run.resume=true``) or, once
        complete, rewritten with the same numbers; another config's or an unfinished run's work is never
        overwritten."""
        try:
            previous = read_sidecar(self.json_path)
        except DatasetError:
            previous = {"status": "unreadable"}
        if not previous:
            return
        if previous.get("config_hash") != self.hash:
            raise ConfigError(f"run.name={self.run_name}: {self.run_dir} holds a run of another config (hash "
                              f"{previous.get('config_hash')}, this one {self.hash}); choose another run.name, or leave "
                              f"it unset (every run then gets a folder of its own)")
        if not self.resume and effective_status(previous) != "complete":
            raise ConfigError(f"run.name={self.run_name}: {self.run_dir} holds an unfinished run of this config "
                              f"(status {effective_status(previous)}); rerun with run.resume=true to continue it, or "
                              f"choose another run.name")

    def release(self) -> None:
        """Give up the lock (finish and fail do)."""
        self._lock.close()

    def split_path(self, split: str) -> Path:
        """The checkpoint of a finished split (its columns and details), read back by resume."""
        return self.work_dir / "columns" / f"{_safe_name(split)}.json"

    def predictions_path(self, split: str) -> Path:
        return self.work_dir / "predictions" / f"{_safe_name(split)}.jsonl"

    def cached(self, split: str, split_key: str | None = None) -> bool:
        """With resume on, reuse a split this config already finished on the same data (``split_key``, the
        split's digest, when given); returns True if it did."""
        path = self.split_path(split)
        if not (self.resume and path.is_file()) or path.is_symlink():
            return False
        try:
            saved = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False
        if not isinstance(saved, dict) or saved.get("config_hash") != self.hash or "columns" not in saved:
            return False
        if split_key is not None and saved.get("split_key") != split_key:
            self.extra.setdefault("recomputed_changed_splits", []).append(split)
            return False
        self.columns.update(saved["columns"])
        self.splits[split] = {**saved["details"], "resumed": True}
        self._save("running")
        return True

    def add_split(self, split: str, columns: Mapping[str, Mapping[str, float]], details: Mapping[str, Any],
                  split_key: str | None = None) -> None:
        """A finished split: its table columns and its details (and the digest of its data, for resume);
        all are written at once."""
        columns = {column: dict(values) for column, values in columns.items()}
        self.columns.update(columns)
        self.splits[split] = dict(details)
        if self.writer:
            write_json(self.split_path(split), {"config_hash": self.hash, "split_key": split_key, "columns": columns,
                                                "details": dict(details)})
        self._save("running")

    def table(self):
        return accuracy_table(self.columns, self.row_order)

    def finish(self) -> None:
        """Status ``complete``; then the run's table, figure and sidecar become the stable
        ``<output_dir>/<experiment>.csv``, ``.png`` and ``.json`` (each replaced atomically: readers see the previous
        completed run or this one; the sidecar last, so that it never names a table not yet written)."""
        try:
            sidecar = self._save("complete")
            if self.writer:
                if self.columns:
                    write_csv(self.table(), self.stable_csv_path)
                figure = Path(self.extra["figure"]) if self.extra.get("figure") else None
                if figure is not None and figure.is_file():
                    atomic_write_bytes(self.output_dir / figure.name, figure.read_bytes())
                write_json(self.stable_json_path, sidecar)
        finally:
            self.release()

    def fail(self, error: BaseException) -> None:
        """Status ``interrupted`` for Ctrl-C / SIGTERM (finished splits and items are kept for resume),
        ``failed`` with the error otherwise. On a full disk the sidecar is rewritten in place (its old
        blocks are freed first), so that the status still says what happened."""
        self.extra["error"] = "".join(traceback.format_exception_only(type(error), error)).strip()
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        try:
            self._save(status)
        except OSError:
            with contextlib.suppress(OSError):
                self._save(status, in_place=True)
        finally:
            self.release()

    def _save(self, status: str, in_place: bool = False) -> dict[str, Any]:
        """Write the table and the sidecar (writer only); returns the sidecar's contents."""
        if not self.writer:
            return {}
        if self.columns and not in_place:
            write_csv(self.table(), self.csv_path)
        forwards = {split: details.get("image_forwards") for split, details in self.splits.items()}
        payload = {
            "experiment": self.name, "status": status, "started": self._started, "updated": utc_now(),
            "wall_time_s": round(time.perf_counter() - self._clock, 3),
            "command": " ".join(sys.argv), "config_hash": self.hash, "run_dir": str(self.run_dir), "config": self.config,
            "model": self.model_info, "table": self.columns, "columns": self.splits,
            "counts": {"image_forwards": forwards,
                       "total_image_forwards": sum(sum(v.values()) for v in forwards.values() if v)},
            "code": self.code, "environment": environment(), "process": self._process,
            **self.extra,
        }
        if in_place:  # no room for a second copy: truncate the old sidecar, write it compact (never through a link)
            fd = os.open(self.json_path, os.O_WRONLY | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(payload, separators=(",", ":"), default=str) + "\n")
            return payload
        write_json(self.json_path, payload)
        return payload
