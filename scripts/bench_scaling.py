#!/usr/bin/env python
"""Data-parallel scaling: images/s of one experiment run by 1 and by N processes (torchrun, gloo on CPU).

Runs ``falip-run experiment=<experiment>`` (default: the sandbox REC experiment, more scenes) once
with one process using every core (``--threads`` torch threads), then with N processes of
threads/N each, alternating ``--repeats`` times; images/s = images of the split / the split's wall
time in the sidecar (what the loop itself took, model loading excluded), and the whole command's
wall time beside it. Also checks that every run wrote the same CSV bytes. Writes
results/benchmarks/scaling.csv.

On a machine with C cores the ceiling is C cores' worth of forwards: N processes x C/N threads can
only beat 1 process x C threads where one process leaves cores idle (Python-side preparation,
small batches, a GPU per process). On the 2-core project machine both cores are already busy in
one process, so ~1x is the expected result there; on a GPU node each rank gets its own GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from falip.experiments.benchmarking import environment_columns, write_rows


def run_once(processes: int, threads: int, out: Path, overrides: list[str], cache: Path) -> tuple[float, float, bytes, dict]:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                if processes > 1 else [sys.executable])
    command = [*launcher, "-m", "falip.cli", "run.progress=false", f"run.output_dir={out}", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "FALIP_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    total = time.perf_counter() - started
    csv = next(out.glob("*.csv"))
    sidecar = json.loads(csv.with_suffix(".json").read_text())
    split = next(iter(sidecar["columns"].values()))
    images = split.get("num_images") or split.get("num_samples") or split.get("num_shapes")
    return images / split["wall_time_s"], total, csv.read_bytes(), split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="torch threads in all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--out", default="results/benchmarks/scaling.csv")
    parser.add_argument("overrides", nargs="*", help="extra falip-run overrides")
    args = parser.parse_args()
    overrides = [f"dataset.generator.scenes_per_split={args.scenes}", "dataset.splits=[objects3]", *args.overrides]
    rows, csvs = [], set()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_once(1, args.threads, tmp / "warmup", overrides, tmp / "cache")  # writes the scenes once
        measured: dict[int, list[tuple[float, float]]] = {1: [], args.processes: []}
        for repeat in range(args.repeats):
            order = [1, args.processes] if repeat % 2 == 0 else [args.processes, 1]
            for processes in order:
                out = tmp / f"run{repeat}_{processes}"
                rate, total, csv, split = run_once(processes, max(1, args.threads // processes), out, overrides,
                                                   tmp / "cache")
                measured[processes].append((rate, total))
                csvs.add(csv)
                print(f"{processes} process(es): {rate:.1f} images/s in the loop, {total:.1f} s in all", flush=True)
        base = sorted(r for r, _ in measured[1])[len(measured[1]) // 2]
        for processes, values in measured.items():
            rates, totals = sorted(r for r, _ in values), sorted(t for _, t in values)
            median_rate = rates[len(rates) // 2]
            rows.append({"experiment": "shapes_rec objects3", "images": split.get("num_images"),
                         "processes": processes, "threads_per_process": max(1, args.threads // processes),
                         "images_per_s_median": round(median_rate, 2), "images_per_s_min": round(rates[0], 2),
                         "images_per_s_max": round(rates[-1], 2), "command_s_median": round(totals[len(totals) // 2], 2),
                         "speedup_vs_1": round(median_rate / base, 3), "repeats": args.repeats,
                         "identical_csv": len(csvs) == 1, "cores": os.cpu_count(), **environment_columns()})
    path = write_rows(args.out, rows)
    for row in rows:
        print(row)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
