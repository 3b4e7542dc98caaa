#!/usr/bin/env python
"""Regenerate the committed sandbox tables that tests/test_sandbox_regression.py compares against.

Runs each reduced case of tests/experiments/expected/cases.json in a temporary cache and output folder and
copies its CSV to tests/experiments/expected/<case>.csv. Run it only after an intended change, and say why in
the commit: the regression test exists to catch unintended ones.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

EXPECTED = Path(__file__).resolve().parent.parent / "tests" / "experiments" / "expected"


def main() -> None:
    cases = json.loads((EXPECTED / "cases.json").read_text())["cases"]
    work = Path(tempfile.mkdtemp(prefix="falip-expected-"))
    os.environ["FALIP_CACHE"] = str(work / "cache")
    from falip.cli import compose
    from falip.experiments.runner import run_experiment

    for name, overrides in cases.items():
        config = compose([*overrides, f"run.output_dir={work}", "run.progress=false"])
        run_experiment(config)
        shutil.copy(work / f"{name}.csv", EXPECTED / f"{name}.csv")
        print(f"{name}: wrote {EXPECTED / f'{name}.csv'}")
        print((EXPECTED / f"{name}.csv").read_text())


if __name__ == "__main__":
    main()
