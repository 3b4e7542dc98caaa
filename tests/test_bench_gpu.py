"""scripts/bench_gpu.py on a CPU with --quick: every section writes its rows, with the device columns."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"


@pytest.mark.slow
def test_the_gpu_benchmark_runs_end_to_end_on_a_cpu(tmp_path):
    out = tmp_path / "gpu.csv"
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    sections = {row["section"] for row in rows}
    assert sections == {"ceiling", "correctness", "precision", "throughput", "plan"}
    assert all(row["device_name"] == "cpu" and row["torch"] for row in rows)
    correct = [row for row in rows if row["section"] == "correctness"]
    assert len(correct) == 3 and all(float(row["value"]) == 0.0 for row in correct)  # cpu vs cpu: the same bits
    picks = next(row for row in rows if "REC picks changed" in row["measure"])
    assert 0.0 <= float(picks["value"]) <= 100.0
    rates = [float(row["value"]) for row in rows if "REC pipeline" in row["measure"]]
    assert rates and min(rates) > 0
    assert all(float(row["value"]) > 0 for row in rows if row["section"] == "plan")
