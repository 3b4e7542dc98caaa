"""Reports: combine finished experiments into a paper-layout table, with the paper's numbers as reference rows.

``task.columns`` maps each output column to ``[experiment, column]`` of a finished run's CSV in
``run.output_dir``; ``task.average`` (optional) names a column holding the mean of the others
(only for rows that have all of them); ``task.paper_csv`` holds the paper's rows.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..io import write_json
from .provenance import environment, git_state, utc_now
from .tables import combine_with_paper, paper_table, read_table, write_csv


def build_paper_table(config: dict) -> pd.DataFrame:
    """The table ``config['task']`` lays out, from finished runs in ``run.output_dir``; written and printed."""
    task, output_dir = config["task"], Path(config["run"]["output_dir"])
    columns, sources = {}, {}
    for column, (experiment, source_column) in task["columns"].items():
        path = output_dir / f"{experiment}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `falip-run experiment={experiment}` first "
                                    f"(same run.output_dir), then build this table")
        frame = read_table(path)
        if source_column not in frame.columns:
            raise KeyError(f"{path} has no column {source_column!r} (columns: {list(frame.columns)})")
        columns[column] = frame[source_column]
        sidecar = output_dir / f"{experiment}.json"
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        sources[column] = {"csv": str(path), "column": source_column, "status": meta.get("status"),
                           "config_hash": meta.get("config_hash"), "model": (meta.get("model") or {}).get("source"),
                           "weights_sha256": (meta.get("model") or {}).get("weights_sha256")}
    rows = list(dict.fromkeys(row for series in columns.values() for row in series.index))
    measured = pd.DataFrame({name: series.reindex(rows) for name, series in columns.items()})
    if task.get("average"):
        measured[task["average"]] = measured.mean(axis=1, skipna=False)
    measured.index.name = "prompt"
    table = combine_with_paper(measured, paper_table(task["paper_csv"])) if task.get("paper_csv") else measured
    name = config["experiment_name"]
    path = write_csv(table, output_dir / f"{name}.csv", decimals=1)
    write_json(output_dir / f"{name}.json", {
        "experiment": name, "status": "complete", "updated": utc_now(), "config": config, "sources": sources,
        "paper_reference": task.get("paper_csv"),
        "average": f"{task.get('average')} = mean of {list(columns)} (rows with all of them)" if task.get("average") else None,
        "code": {**git_state(), "falip": environment()["falip"]}})
    print(table.to_string(na_rep="-", float_format=lambda v: f"{v:.1f}"))
    print(f"\nwrote {path}")
    return table


# task.name of a report -> its builder. A report combines finished results: no model, no dataset.
REPORTS = {"table": build_paper_table}
