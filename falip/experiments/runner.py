"""The one experiment loop: config -> model + prompts + task -> every split -> table + sidecar.

:func:`run_experiment` runs a resolved config; :func:`evaluate_split` is the loop every task shares:
items of a split -> region embeddings under every prompt (:func:`falip.encoding.regions.encode_items`)
-> the task's lines (written to the predictions file as they come) -> the task's metrics. Skips,
limits, resume, progress and counters live here, once, for every task.
"""
from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..data.registry import check_dataset, load_dataset_split
from ..encoding.regions import DEFAULT_BATCH_SIZE, EncodingCounts, encode_items
from ..encoding.text import TextCache
from ..errors import ConfigError, DatasetError
from ..io import atomic_write_text, cache_root, drop_torn_tail, open_for_append, output_error
from ..model.clip import OPEN_CLIP_PREFIX, FoveatedCLIP
from ..model.steering import EXACT, ExecutionPlan
from ..prompts.config import prompts_from_config
from ..prompts.prompt import VisualPrompt
from ..tasks import TASKS
from ..tasks.base import Line, Task
from .analyses import ANALYSES, ANALYSIS_CHECKS
from .distributed import SINGLE, Ranks
from .generated import materialize
from .identity import SplitIdentity
from .plots import grid_plot
from .record import ExperimentRecord
from .reports import REPORTS
from .settings import RunSettings


@dataclass(frozen=True)
class LoopOptions:
    """The ``run.*`` settings that shape the loop (not what it computes, except ``skip_bad_samples`` and the
    opt-in approximate ``plan.cls_stream``)."""

    batch_size: int = DEFAULT_BATCH_SIZE
    num_workers: int = 0
    prefetch_images: int = 64
    skip_bad_samples: bool = False
    progress: bool = True
    plan: ExecutionPlan = EXACT

    @classmethod
    def from_settings(cls, run: RunSettings) -> "LoopOptions":
        return cls(batch_size=run.batch_size, num_workers=run.num_workers, prefetch_images=run.prefetch_images,
                   skip_bad_samples=run.skip_bad_samples, progress=run.progress,
                   plan=ExecutionPlan(trims=run.trims, cls_stream=run.cls_stream))


@dataclass
class SplitResult:
    """One evaluated split: its lines (in item order), metrics, counters and what it cost."""

    split: str
    lines: list[Line]
    metrics: dict[str, dict[str, float]]
    description: dict[str, Any]
    counts: EncodingCounts
    skipped: list[dict]
    wall_time_s: float
    notes: list[str] = field(default_factory=list)
    resumed_items: int = 0
    stale_items: int = 0  # lines of the interrupted run that no current item matches (recomputed)
    ranks: list[dict] | None = None  # per-rank items, forwards and wall times of a multi-process run

    @property
    def image_forwards(self) -> dict[str, int]:
        return self.counts.image_forwards

    @property
    def unbiased_layer_rows(self) -> dict[str, int]:
        return self.counts.unbiased_layer_rows

    @property
    def clipped_boxes(self) -> int:
        return self.counts.clipped_boxes

    @property
    def empty_regions(self) -> dict[str, int]:  # per prompt: rows with no region (no bias)
        return self.counts.empty_regions

    @property
    def accuracy(self) -> dict[str, float]:
        return self.metrics["accuracy"]

    @property
    def correct(self) -> dict[str, int]:
        """Per prompt, the lines scored correct ({} for a task without labels)."""
        if "accuracy" not in self.metrics:
            return {}
        names = self.metrics["accuracy"]
        return {name: sum(line["correct"][name] for line in self.lines) for name in names}

    def summary(self) -> dict[str, Any]:
        return {"split": self.split, **self.description, "num_lines": len(self.lines), "metrics": self.metrics,
                "correct": self.correct, "image_forwards": self.image_forwards,
                "unbiased_layer_rows": self.unbiased_layer_rows, "skipped": self.skipped,
                "num_skipped_lines": sum(s["lines"] for s in self.skipped), "clipped_boxes": self.clipped_boxes,
                "resumed_items": self.resumed_items,
                "stale_items": self.stale_items, "wall_time_s": round(self.wall_time_s, 3), "notes": self.notes,
                **({"ranks": self.ranks} if self.ranks else {}),
                **({"empty_regions": self.empty_regions} if any(self.empty_regions.values()) else {})}

    def console_summary(self, unit: str) -> str | None:
        """One line on what was skipped or clipped (None when nothing was)."""
        parts = []
        if self.skipped:
            lines = sum(s["lines"] for s in self.skipped)
            parts.append(f"{len(self.skipped)} item(s) skipped ({lines} {unit}s counted wrong)")
        if self.clipped_boxes:
            parts.append(f"{self.clipped_boxes} box(es) partly outside their image clipped to it")
        if self.resumed_items:
            parts.append(f"{self.resumed_items} item(s) reused from the interrupted run")
        parts.extend(self.notes)
        if self.stale_items:
            parts.append(f"{self.stale_items} item(s) of the interrupted run no longer match the split "
                         f"(its annotations changed) and were recomputed")
        return f"{self.split}: " + "; ".join(parts) if parts else None


@dataclass(frozen=True)
class PredictionsFile:
    """Where a split's per-unit lines go: appended item by item to ``<path>.partial`` (flushed, so an
    interrupted run keeps them), then written to ``path`` at once, in item order, when the split ends.
    With ``resume``, an item of a partial file written under the same ``token`` (the config hash) is
    reused only if its digest (:mod:`falip.experiments.identity`) equals the current item's: a split whose
    annotations changed since gets its changed items recomputed, wherever the unchanged ones moved."""

    path: Path
    token: str = ""
    resume: bool = False

    def partial(self, rank: int = 0) -> Path:
        """Rank ``rank``'s partial file (``<path>.partial`` for rank 0, ``.partial.<rank>`` for the others)."""
        return self.path.with_name(self.path.name + ".partial" + (f".{rank}" if rank else ""))

    def partials(self) -> list[Path]:
        """Every rank's partial file (links are not ours: never read, never written through)."""
        return sorted(p for p in self.path.parent.glob(self.path.name + ".partial*") if not p.is_symlink())

    def finished_items(self, item_keys: Sequence[str]) -> tuple[dict[int, dict], int]:
        """``({item index: {"lines": [...], "skip": {...} | None}}, stale)`` from the resumable partial files
        of every rank of the interrupted run (however many there were): an entry is reused for every current
        item with its digest; ``stale`` counts the entries no current item matches (recomputed)."""
        if not self.resume:
            return {}, 0
        by_key: dict[str, dict] = {}
        for path in self.partials():
            rows = path.read_text(errors="replace").splitlines()
            try:
                header = json.loads(rows[0]) if rows else {}
            except json.JSONDecodeError:
                continue
            if not isinstance(header, dict) or header.get("token") != self.token:
                continue
            for row in rows[1:]:
                try:
                    entry = json.loads(row)
                except json.JSONDecodeError:  # a line torn when the run was killed: dropped alone
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("key"), str) and isinstance(entry.get("lines"), list):
                    by_key[entry["key"]] = entry
        finished = {index: by_key[key] for index, key in enumerate(item_keys) if key in by_key}
        return finished, len(set(by_key) - set(item_keys))


def write_line(handle, path: Path, payload: Mapping[str, Any]) -> None:
    """One JSON line, flushed (a disk full or a lost folder becomes one line naming ``path``)."""
    try:
        handle.write(json.dumps(payload, default=str) + "\n")
        handle.flush()
    except OSError as error:
        raise output_error(path, error) from None


def _image_available(item) -> bool:
    if callable(getattr(item, "load_views", None)):  # renders its own inputs: nothing on disk to find
        return True
    return getattr(item, "embedded_image", None) is not None or Path(item.image_path).is_file()


def evaluate_split(model: FoveatedCLIP, task: Task, split, prompts: Sequence[VisualPrompt], texts: TextCache,
                   options: LoopOptions = LoopOptions(), predictions: PredictionsFile | Path | None = None,
                   desc: str = "", ranks: Ranks = SINGLE, identity: SplitIdentity | None = None) -> SplitResult | None:
    """Score every unit of ``split`` under every prompt; per-unit lines go to ``predictions`` (see
    :class:`PredictionsFile`; a plain path = no resume).

    An unusable item (missing or corrupt image, size mismatch, bad box) stops the run with a
    :class:`DatasetError`, or with ``options.skip_bad_samples`` becomes a recorded skip whose lines count
    as wrong. Missing image files are all reported before any forward. With several ``ranks``, each
    encodes its shard of the items; rank 0 gathers the lines and returns the result (others: ``None``).
    ``identity`` (computed when not given) is what a resume checks items against.
    """
    started = time.perf_counter()
    if isinstance(predictions, (str, Path)):
        predictions = PredictionsFile(Path(predictions))
    items, regions, names = task.items(split), task.regions(split), [prompt.name for prompt in prompts]
    description = task.describe(split)
    where = f"{getattr(split, 'dataset', '?')} {getattr(split, 'split', '')}".strip()
    if not items or not any(task.lines(split, index) for index in range(len(items))):
        raise DatasetError(f"{where} has no {task.unit}s ({description.get('source', '')})")
    missing = [item for item in items if not _image_available(item)]
    if missing and not options.skip_bad_samples:
        listing = ", ".join(str(item.image_path) for item in missing[:5])
        raise DatasetError(f"{len(missing)} of {len(items)} images of {where} are missing, e.g. {listing}. "
                           f"Check dataset.root / dataset.image_dir, or set run.skip_bad_samples=true to count "
                           f"their {task.unit}s as wrong.")
    context = task.prepare(split, texts, model.logit_scale)
    identity = identity or SplitIdentity.of(task, split)
    finished, stale = predictions.finished_items(identity.item_keys) if predictions else ({}, 0)
    by_item: dict[int, list[Line]] = {index: entry["lines"] for index, entry in finished.items()}
    skipped: dict[int, dict] = {index: entry["skip"] for index, entry in finished.items() if entry.get("skip")}
    todo = ranks.shard([index for index in range(len(items)) if index not in finished])
    counts = EncodingCounts()
    handle = None
    if predictions:
        predictions.path.parent.mkdir(parents=True, exist_ok=True)
        partial = predictions.partial(ranks.rank)
        resuming = predictions.resume and partial.is_file() and not partial.is_symlink() and bool(finished)
        if resuming:
            drop_torn_tail(partial)
        handle = open_for_append(partial, fresh=not resuming)
        if not resuming:
            write_line(handle, partial, {"token": predictions.token, "split": getattr(split, "split", ""),
                                         "split_key": identity.split_key})
    try:
        for position, outcome in encode_items(
                model, [items[index] for index in todo], [regions[index] for index in todo], prompts,
                resize=task.resize, batch_size=options.batch_size, num_workers=options.num_workers,
                prefetch_images=options.prefetch_images, progress=options.progress and ranks.is_main, desc=desc or where,
                counts=counts, plan=options.plan):
            index, skip = todo[position], None
            if isinstance(outcome, str):
                if not options.skip_bad_samples:
                    raise DatasetError(outcome + f" (set run.skip_bad_samples=true to record a skip and count "
                                                 f"its {task.unit}s as wrong)")
                new = [{**line, "skipped": outcome, "correct": {name: 0 for name in names}}
                       for line in task.lines(split, index)]
                skip = skipped[index] = {**task.item_key(split, index), "reason": outcome, "lines": len(new)}
            else:
                new = task.score(split, index, {name: outcome[name] for name in names}, context)
            by_item[index] = new
            if handle:
                write_line(handle, partial, {"item": index, "key": identity.item_keys[index], "lines": new, "skip": skip})
    finally:
        if handle:
            try:
                handle.close()
            except OSError:  # the flush of a line a full disk refused: the error is already on its way
                pass
    mine = {"rank": ranks.rank, "lines": {i: by_item[i] for i in todo if i in by_item},
            "skipped": {i: skipped[i] for i in todo if i in skipped}, "counts": counts, "items": len(todo),
            "wall_time_s": round(time.perf_counter() - started, 3)}
    gathered = ranks.gather(mine)
    if not ranks.is_main:
        return None
    for part in gathered:
        by_item.update(part["lines"])
        skipped.update(part["skipped"])
    lines = [line for index in sorted(by_item) for line in by_item[index]]
    if predictions:
        atomic_write_text(predictions.path, "".join(json.dumps(line, default=str) + "\n" for line in lines))
        for path in predictions.partials():
            path.unlink()
    total = sum((part["counts"] for part in gathered), EncodingCounts.zero(names))
    result = SplitResult(split=getattr(split, "split", ""), lines=lines, metrics=task.aggregate(split, lines, names),
                         description=description, counts=total,
                         skipped=[skipped[index] for index in sorted(skipped)],
                         wall_time_s=time.perf_counter() - started,
                         notes=list(getattr(split, "notes", [])) + task.notes(context),
                         resumed_items=len(finished), stale_items=stale)
    result.description.update(task.split_details(split, lines, names))
    if ranks.world > 1:
        result.ranks = [{"rank": part["rank"], "items": part["items"], "image_forwards": part["counts"].image_forwards,
                         "wall_time_s": part["wall_time_s"]} for part in gathered]
    return result


def load_model(model_cfg: Mapping[str, Any], run: RunSettings, ranks: Ranks = SINGLE) -> FoveatedCLIP:
    """``model.path`` (a local directory) wins over ``model.name`` (a HF Hub id, read from the HF cache offline);
    for ``model.name=open_clip:<architecture>``, ``model.path`` (a state-dict file) or ``model.pretrained`` (a tag)
    are its weights. In a multi-process CUDA run each rank takes ``cuda:<LOCAL_RANK>``."""
    source = model_cfg.get("path") or model_cfg.get("name")
    if not source:
        raise ConfigError("set model.name (a HF Hub id) or model.path (a local CLIP directory)")
    device = run.device
    if ranks.world > 1 and torch.cuda.is_available() and device in ("auto", "cuda"):
        device = f"cuda:{ranks.local_rank}"
    if str(model_cfg.get("name") or "").startswith(OPEN_CLIP_PREFIX):  # an architecture + its weights
        return FoveatedCLIP.from_pretrained(model_cfg["name"], weights=model_cfg.get("path") or model_cfg.get("pretrained"),
                                            device=device, dtype=run.dtype)
    return FoveatedCLIP.from_pretrained(source, device=device, dtype=run.dtype,
                                        attn_implementation=model_cfg.get("attn_implementation", "sdpa"))


class RunInterrupted(KeyboardInterrupt):
    """SIGTERM (e.g. a cluster's time limit), handled like Ctrl-C: the record says ``interrupted``."""


@contextlib.contextmanager
def _sigterm_interrupts():
    """Within the block, SIGTERM raises :class:`RunInterrupted` in the main thread (as Ctrl-C raises
    KeyboardInterrupt), so that finished work is recorded; the previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise RunInterrupted(f"stopped by signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def load_splits(task: Task, dataset: Mapping[str, Any], limit: int | None) -> dict[str, Any]:
    """Every configured split, read and limited before the model loads (a bad or empty split fails fast)."""
    splits = {}
    for name in dataset["splits"]:
        split = load_dataset_split(dataset, name)
        splits[name] = task.limit(split, int(limit)) if limit else split
    return splits


def run_experiment(config: Mapping[str, Any], overrides: Sequence[str] = ()) -> ExperimentRecord | None:
    """Run ``config`` (a plain dict: the resolved Hydra config) and return its record (None for a report).

    Everything the user can get wrong is checked before the model loads: the run settings, the task,
    the prompts, the dataset's layout, and every split's content. SIGTERM anywhere in the run (data
    generation included) is handled as Ctrl-C: temporary files are removed, finished work is kept.
    """
    with _sigterm_interrupts():
        return _run_experiment(config, overrides)


def _run_experiment(config: Mapping[str, Any], overrides: Sequence[str]) -> ExperimentRecord | None:
    config = dict(config)
    if config.get("report"):  # a table from finished runs: no model, no dataset
        name = config["report"].get("name")
        if name not in REPORTS:
            raise ConfigError(f"report.name={name!r} is not a known report; known: {sorted(REPORTS)}")
        REPORTS[name](config)
        return None
    run = RunSettings.from_config(config["run"])
    run.apply_threads()
    if config.get("analysis"):  # figures of what the model does inside: no scoring
        name = config["analysis"].get("name")
        if name not in ANALYSES:
            raise ConfigError(f"analysis.name={name!r} is not a known analysis; known: {sorted(ANALYSES)}")
        ANALYSIS_CHECKS.get(name, lambda _: None)(config)
        prompts = prompts_from_config(config.get("prompts") or {}, foveal=config.get("foveal"))
        ANALYSES[name](config, run, load_model(config["model"], run), prompts)
        return None
    task_name = config["task"]["name"]
    if task_name not in TASKS:
        raise ConfigError(f"task.name={task_name!r} is not a known task; known: {sorted(TASKS)} (reports: "
                          f"report=<name>, analyses: analysis=<name>)")
    task = TASKS[task_name].from_config(config["task"])
    torch.manual_seed(run.seed)
    prompts = prompts_from_config(config.get("prompts") or {}, foveal=config.get("foveal"))
    if not prompts:
        raise ConfigError("the experiment has no prompts: set prompts=<group> or prompts.<name>={...}")
    task.check_prompts(prompts)
    dataset = materialize(config["dataset"])
    check_dataset(dataset)
    splits = load_splits(task, dataset, run.limit)
    ranks = Ranks.from_environment()
    if ranks.world > 1 and run.num_workers:
        print(f"[falip] rank {ranks.rank}/{ranks.world}: run.num_workers={run.num_workers} per process", file=sys.stderr)
    model = load_model(config["model"], run, ranks)
    record = ExperimentRecord(config["experiment_name"], config, run.output_dir,
                              [prompt.name for prompt in prompts], model, resume=run.resume,
                              writer=ranks.is_main, run_name=run.name)
    folder = record.begin()  # this run's own folder, locked (LockHeld names a live holder)
    record.adopt(ranks.broadcast(str(folder) if folder else None))  # every rank writes its partial files there
    ranks.barrier()  # every rank sees the folder as rank 0 left it
    try:
        if ranks.is_main:
            print(f"[falip] run folder: {record.run_dir}", file=sys.stderr)
        record.extra["world_size"] = ranks.world
        record.extra["overrides"] = list(overrides)  # the command line's key=value (a sweep job's coordinates)
        if run.limit:
            record.extra["partial"] = {"limit": run.limit, "why": f"run.limit={run.limit}: only the first "
                                       f"{run.limit} {task.unit}s of each split, not the full protocol"}
            if ranks.is_main:
                print(f"[falip] run.limit={run.limit}: only the first {run.limit} {task.unit}s of each split are "
                      f"scored -- not the paper's protocol (the sidecar says so; paper-layout tables mark it)",
                      file=sys.stderr)
        options = LoopOptions.from_settings(run)
        texts = TextCache(model, disk_cache=cache_root() / "text_classifiers", model_key=record.model_info["weights_sha256"])
        with torch.inference_mode():  # SIGTERM: run_experiment handles it for the whole run
            for split_name, split in splits.items():
                identity = SplitIdentity.of(task, split)
                if record.cached(split_name, identity.split_key):
                    if ranks.is_main:
                        print(f"[falip] {split_name}: reusing the finished split from {record.split_path(split_name)}")
                    continue
                if ranks.is_main and split_name in record.extra.get("recomputed_changed_splits", []):
                    print(f"[falip] {split_name}: the finished split was computed on other data (its annotations "
                          f"changed since): recomputing it", file=sys.stderr)
                predictions = (PredictionsFile(record.predictions_path(split_name), record.hash, record.resume)
                               if run.save_predictions else None)
                result = evaluate_split(model, task, split, prompts, texts, options, predictions, ranks=ranks,
                                        identity=identity)
                if result is None:  # a rank > 0: rank 0 has its lines and writes
                    continue
                details = {**result.summary(), "text_encoder_distinct_texts": texts.num_encoded,
                           "text_classifiers_from_disk": texts.classifiers_from_disk,
                           "texts_truncated_to_context": len(texts.truncated),
                           "predictions": str(predictions.path) if predictions else None}
                record.add_split(split_name, task.columns(split_name, result.metrics), details, identity.split_key)
                record.extra["texts_truncated"] = {"count": len(texts.truncated), "context_tokens": model.text_context,
                                                   "examples": texts.truncated[:3]}
                summary = result.console_summary(task.unit)
                if summary:
                    print(f"[falip] {summary} (details: {record.json_path})", file=sys.stderr)
        if texts.unknown and ranks.is_main:
            share = 100.0 * texts.unknown_tokens / max(1, texts.tokens)
            record.extra["texts_with_unknown_words"] = {"count": len(texts.unknown), "unknown_token_share_%": round(share, 2),
                                                        "examples": texts.unknown[:3]}
            print(f"[falip] warning: {len(texts.unknown)} of {texts.num_encoded} texts have words the model's "
                  f"tokenizer does not know ({share:.1f}% of their tokens are its unknown token), e.g. "
                  f"{texts.unknown[0]!r}: those words are not read", file=sys.stderr)
        if config.get("plot") and ranks.is_main:
            points = {prompt.name: dict(prompt.grid_point) for prompt in prompts if prompt.grid_point}
            figure = grid_plot(record.table(), points, config["plot"]["x"], config["plot"].get("lines"),
                               record.work_dir / f"{record.name}.png", title=record.name)
            record.extra["figure"] = str(figure)
    except BaseException as error:
        record.fail(error)
        raise
    record.finish()
    return record
