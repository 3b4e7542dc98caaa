"""Reports: combine finished experiments into a paper-layout table, with the paper's numbers as reference rows.

A report's settings are the ``report`` section (``configs/report/``): ``report.columns`` maps each output
column to ``[experiment, column]`` of a finished run's CSV in ``run.output_dir``; ``report.average``
(optional) names a column holding the mean of the others (only for rows that have all of them);
``report.paper_csv`` holds the paper's rows.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
from hydra.experimental.callback import Callback

from ..errors import DatasetError
from ..io import atomic_write_text, write_json
from .plots import collect_plot
from .provenance import environment, git_state, utc_now
from .record import effective_status, read_sidecar
from .tables import (DELTA, combine_with_paper, paper_reference_path, paper_table, read_table, reference_caption,
                     write_csv)


# The backbone the paper's numbers were measured with (its tables' reference rows).
PAPER_BACKBONE = {"name": "openai/clip-vit-base-patch16", "image_size": 224, "patch_size": 16, "vision_layers": 12}


def model_label(meta: Mapping[str, Any]) -> str:
    """How a table names the model of a finished run: its configured name and its weights hash."""
    model, info = (meta.get("config") or {}).get("model") or {}, meta.get("model") or {}
    name = model.get("name") or info.get("source") or "unknown model"
    weights = info.get("weights_sha256")
    return f"{name} [weights {weights[:8]}]" if weights else name


def is_paper_backbone(meta: Mapping[str, Any]) -> bool:
    """The run used OpenAI's ViT-B/16 (by the model config's name and the vision tower's geometry)."""
    model, info = (meta.get("config") or {}).get("model") or {}, meta.get("model") or {}
    return model.get("name") == PAPER_BACKBONE["name"] and all(
        info.get(key) == value for key, value in PAPER_BACKBONE.items() if key != "name")


def partial_reasons(meta: Mapping[str, Any] | None) -> list[str]:
    """Why a finished run's numbers are not the full protocol: no sidecar, a status other than complete (a
    ``running`` run whose process is gone reads as interrupted), ``run.limit``; empty when none."""
    if not meta:
        return ["no sidecar (status unknown)"]
    reasons = []
    status = effective_status(meta)
    if status != "complete":
        reasons.append(f"status {status}")
    limit = (meta.get("partial") or {}).get("limit") or ((meta.get("config") or {}).get("run") or {}).get("limit")
    if limit:
        reasons.append(f"run.limit={limit}")
    return reasons


def partial_label(column: str, reasons: list[str]) -> str:
    """A column header that says its numbers are partial (in the CSV itself, not only in a sidecar)."""
    return f"{column} [PARTIAL: {'; '.join(reasons)}]" if reasons else column


def with_deltas(table: pd.DataFrame, measured: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """``table`` plus one row ``<prompt> [ours - paper]`` per prompt both report (source ``delta``)."""
    shared = [row for row in measured.index if row in paper.index]
    deltas = measured.loc[shared] - paper.reindex(index=shared, columns=measured.columns)
    deltas.insert(0, "source", DELTA)
    deltas.insert(1, "model", "")
    deltas.index = [f"{row} [ours - paper]" for row in shared]
    combined = pd.concat([table, deltas])
    combined.index.name = "prompt"
    return combined


def build_paper_table(config: dict) -> pd.DataFrame:
    """The table ``config['task']`` lays out, from finished runs in ``run.output_dir``; written and printed.

    Measured rows name the model(s) they were measured with; when that is not the paper's backbone a
    warning says so (on the console and in the sidecar), since the paper's rows are then no reference.
    """
    task, output_dir = config["report"], Path(config["run"]["output_dir"])
    tag = task.get("reference_tag", "paper")  # "paper": the FALIP paper's rows; else other methods' published rows
    columns, sources, warnings = {}, {}, []
    for column, (experiment, source_column) in task["columns"].items():
        path = output_dir / f"{experiment}.csv"
        if not path.is_file():
            raise DatasetError(f"{path} not found: run `falip-run experiment={experiment}` first "
                               f"(same run.output_dir), then build this table")
        frame = read_table(path)
        if source_column not in frame.columns:
            raise DatasetError(f"{path} has no column {source_column!r} (columns: {list(frame.columns)})")
        meta = read_sidecar(output_dir / f"{experiment}.json")
        reasons = partial_reasons(meta)
        if reasons:
            warnings.append(f"{column} comes from {path}, which is partial ({'; '.join(reasons)}): not the paper's "
                            f"protocol; its column is marked [PARTIAL]")
        columns[partial_label(column, reasons)] = frame[source_column]
        sources[column] = {"csv": str(path), "column": source_column, "status": effective_status(meta) if meta else None,
                           "partial": reasons, "config_hash": meta.get("config_hash"), "model": model_label(meta),
                           "weights_sha256": (meta.get("model") or {}).get("weights_sha256")}
        if task.get("paper_csv") and tag == "paper" and not is_paper_backbone(meta):
            warnings.append(f"{column} ({experiment}) was measured with {model_label(meta)}, not the paper's "
                            f"{PAPER_BACKBONE['name']}: the [paper] rows are no reference for it")
    rows = list(dict.fromkeys(row for series in columns.values() for row in series.index))
    measured = pd.DataFrame({name: series.reindex(rows) for name, series in columns.items()})
    if task.get("average"):
        partial = [column for column, source in sources.items() if source["partial"]]
        average = partial_label(task["average"], [f"averages partial column(s) {partial}"] if partial else [])
        measured[average] = measured.mean(axis=1, skipna=False)
    measured.index.name = "prompt"
    models = " + ".join(dict.fromkeys(source["model"] for source in sources.values()))
    if task.get("paper_csv"):
        paper = paper_table(task["paper_csv"])
        table = combine_with_paper(measured, paper, measured_model=models, tag=tag,
                                   paper_model=task.get("reference_model") or f"{PAPER_BACKBONE['name']} (paper)")
        if task.get("deltas"):
            table = with_deltas(table, measured, paper)
    else:
        table = measured
    name = config["experiment_name"]
    path = write_csv(table, output_dir / f"{name}.csv", decimals=1)
    write_json(output_dir / f"{name}.json", {
        "experiment": name, "status": "complete", "updated": utc_now(), "task": task,
        "output_dir": str(output_dir), "sources": sources, "warnings": warnings,
        "paper_reference": str(paper_reference_path(task["paper_csv"])) if task.get("paper_csv") else None,
        "average": f"{task.get('average')} = mean of {list(columns)} (rows with all of them)" if task.get("average") else None,
        "code": {**git_state(), "falip": environment()["falip"]}})
    print(table.to_string(na_rep="-", float_format=lambda v: f"{v:.1f}"))
    if task.get("paper_csv"):
        print(f"\n[{tag}] rows: {reference_caption(task['paper_csv'])} "
              f"({paper_reference_path(task['paper_csv'])}: sources in its header)")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"\nwrote {path}")
    return table


def run_sidecars(sources: Sequence[str | Path]) -> tuple[list[tuple[str, dict]], list[str]]:
    """Every complete run's sidecar under ``sources`` (folders searched recursively, or sidecar files), each run
    once (a run's folder copy and the stable ``<experiment>.json`` it published are one run, by ``run_dir``),
    as ``(job, sidecar)`` in a stable order -- ``job``: the first folder below the source that holds the run (a
    multirun's job number; the run folder's name under ``runs/<experiment>``) --; and one line per run left out
    (not complete)."""
    found: dict[str, tuple[str, dict]] = {}
    left_out = []
    for source in map(Path, sources):
        if not source.exists():
            raise DatasetError(f"{source} does not exist (collect reads run folders, sweep folders or sidecars)")
        paths = [source] if source.is_file() else sorted(source.rglob("*.json"))
        for path in paths:
            if path.is_symlink() or path.name.startswith("."):
                continue
            meta = read_sidecar(path)
            if "table" not in meta or meta.get("experiment") != path.stem:
                continue  # not a run's sidecar (split checkpoints, caches, tables built by reports)
            run_dir = str(meta.get("run_dir") or path.parent)
            if run_dir in found or any(run_dir in line for line in left_out):
                continue
            status = effective_status(meta)
            if status != "complete":
                left_out.append(f"{run_dir} left out: status {status}")
                continue
            relative = Path(run_dir).relative_to(source) if Path(run_dir).is_relative_to(source) else Path(run_dir).name
            found[run_dir] = ((Path(relative).parts or (Path(run_dir).name,))[0], meta)
    order = sorted(found, key=lambda key: [part.zfill(8) if part.isdigit() else part for part in Path(key).parts])
    return [found[key] for key in order], left_out  # a sweep's jobs in job order (2 before 10)


def _value(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def collect_runs(sources: Sequence[str | Path], destination: str | Path, x: str | None = None) -> pd.DataFrame:
    """Fold finished runs -- run folders (``<output_dir>/runs/<experiment>/``), a Hydra multirun's folder, or
    any folder above them -- into one long-form CSV at ``destination`` (a row per run x experiment x prompt x
    column, with each run's command-line overrides as columns), and a plot of the value against the swept key
    (``x``, default: the first numeric override that varies) beside it."""
    rows = []
    runs, left_out = run_sidecars(sources)
    for warning in left_out:
        print(f"warning: {warning}", file=sys.stderr)
    for label, meta in runs:
        overrides = dict(item.split("=", 1) for item in meta.get("overrides") or [] if "=" in item)
        reasons = partial_reasons(meta)
        for column, values in meta["table"].items():
            for prompt, value in values.items():
                rows.append({"job": label, "run": Path(str(meta.get("run_dir") or label)).name, **{k: _value(v) for k, v in overrides.items()},
                             "experiment": meta["experiment"], "prompt": prompt, "column": column, "value": value,
                             "partial": "; ".join(reasons), "run_dir": meta.get("run_dir")})
    if not rows:
        raise DatasetError(f"{', '.join(map(str, sources))} hold(s) no finished run (<experiment>.json with status complete)")
    frame = pd.DataFrame(rows)
    path = Path(destination)
    atomic_write_text(path, frame.to_csv(index=False))
    swept = [key for key in frame.columns if key not in ("job", "run", "experiment", "prompt", "column", "value", "run_dir")
             and frame[key].nunique() > 1 and pd.api.types.is_numeric_dtype(frame[key])]
    x = x or (swept[0] if swept else None)
    figure = collect_plot(frame, x, path.with_suffix(".png")) if x else None
    print(frame.drop(columns=["run_dir"]).to_string(index=False))
    print(f"\nwrote {path}" + (f" and {figure}" if figure else ""))
    return frame


def collect_sweep(config: dict) -> pd.DataFrame:
    """``falip-run experiment=collect``: ``sweep_dir=<multirun folder>`` -> ``<sweep_dir>/collected.csv``; or
    ``runs=[<folder>, ...]`` (run folders, e.g. ``results/runs/shapes_rec``) -> ``<run.output_dir>/collected.csv``."""
    sweep, runs = config.get("sweep_dir"), config.get("runs")
    x = (config.get("report") or {}).get("x")
    if runs:
        sources = [runs] if isinstance(runs, str) else list(runs)
        return collect_runs(sources, Path(config["run"]["output_dir"]) / "collected.csv", x)
    if not sweep or not Path(sweep).is_dir():
        raise DatasetError(f"sweep_dir={sweep} is not a folder (a Hydra multirun's output: multirun/<date>); or name "
                           f"run folders with runs=[results/runs/<experiment>, ...]")
    return collect_runs([sweep], Path(sweep) / "collected.csv", x)


def backbone_table(sweep_dir: str | Path, column: str | None = None, name: str = "backbones") -> pd.DataFrame:
    """One table from a sweep over models (``falip-run -m experiment=backbones``): rows = prompts,
    columns = the models (config name, or the folder of ``model.path``, with the foveal alpha the job used,
    marked ``untuned`` when the model config says its alpha was not tuned for it), values = ``column`` of
    each job's table (default: its first). Writes ``<sweep_dir>/<name>.csv`` and a sidecar naming each
    checkpoint, its source and weights hash."""
    sweep = Path(sweep_dir)
    columns, models = {}, {}
    jobs, warnings = run_sidecars([sweep])
    for job, meta in jobs:
        sidecar = Path(meta.get("run_dir") or sweep / job) / f"{meta['experiment']}.json"
        config = meta.get("config") or {}
        model = config.get("model") or {}
        label = Path(model["path"]).name if model.get("path") else model.get("name", job)
        alpha = (config.get("foveal") or {}).get("alpha")
        if alpha is not None:
            label = f"{label} [alpha {alpha}{', untuned' if model.get('foveal_alpha_tuned') is False else ''}]"
        reasons = partial_reasons(meta)
        if reasons:
            warnings.append(f"{label} ({sidecar}) is partial ({'; '.join(reasons)}): its column is marked [PARTIAL]")
            label = partial_label(label, reasons)
        chosen = column or next(iter(meta["table"]))
        if chosen not in meta["table"]:
            raise DatasetError(f"{sidecar} has no column {chosen!r} (has {list(meta['table'])})")
        if label in columns:
            label = f"{label} ({job})"
        columns[label] = meta["table"][chosen]
        info = meta.get("model") or {}
        models[label] = {"job": job, "source": info.get("source"), "partial": reasons,
                         "model_type": info.get("model_type"), "foveal_alpha": alpha,
                         "foveal_alpha_tuned": model.get("foveal_alpha_tuned"),
                         "weights_sha256": info.get("weights_sha256"), "image_size": info.get("image_size"),
                         "patch_size": info.get("patch_size"), "column": chosen, "sidecar": str(sidecar)}
    if not columns:
        raise DatasetError(f"{sweep} holds no finished job (<job>/<experiment>.json with status complete)")
    rows = list(dict.fromkeys(prompt for values in columns.values() for prompt in values))
    table = pd.DataFrame({label: [values.get(row) for row in rows] for label, values in columns.items()}, index=rows)
    table.index.name = "prompt"
    path = write_csv(table, sweep / f"{name}.csv")
    write_json(sweep / f"{name}.json", {"experiment": name, "status": "complete", "updated": utc_now(),
                                        "models": models, "warnings": warnings,
                                        "code": {**git_state(), "falip": environment()["falip"]}})
    print(table.round(2).to_string(na_rep="-"))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"\nwrote {path}")
    return table


class BackboneTable(Callback):
    """A Hydra callback: when a multirun over models ends, lay its jobs out as one table (``backbone_table``)."""

    def __init__(self, column: str | None = None, name: str = "backbones"):
        self.column, self.name = column, name

    def on_multirun_end(self, config, **kwargs) -> None:
        backbone_table(config.hydra.sweep.dir, self.column, self.name)


def _backbone_report(config: dict) -> pd.DataFrame:
    report = config["report"]
    return backbone_table(config["sweep_dir"], report.get("column"), report.get("output", "backbones"))


# report.name -> its builder. A report combines finished results: no model, no dataset.
REPORTS = {"table": build_paper_table, "collect": collect_sweep, "backbone_table": _backbone_report}
