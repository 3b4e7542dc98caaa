"""scripts/train_sandbox_clip.py: what it records about a run is what was run."""
from __future__ import annotations

import json
import sys

import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("train_sandbox_clip")


def test_two_stage_run_records_its_command_and_both_stages_wall_times(script, tmp_path, monkeypatch):
    stage1 = ["--steps", "2", "--batch-size", "8", "--pointcloud-batch", "0", "--threads", "1"]
    monkeypatch.setattr(sys, "argv", ["train_sandbox_clip.py", *stage1, "--depth-words-steps", "2",
                                      "--stage1-out", str(tmp_path / "s1"), "--out", str(tmp_path / "full"), "--no-eval"])
    script.main()
    log = json.loads((tmp_path / "s1" / "training_log.json").read_text())
    assert "stage" not in log["history"][-1]  # stage 1 is scenes only
    # stage 1's own log has no wall time (it is saved mid-run); give it one as a finished run would have
    log.update({"wall_time_s": 60.0, "machine_note": "test machine"})
    (tmp_path / "s1" / "training_log.json").write_text(json.dumps(log))
    argv = [*stage1, "--depth-words-steps", "2", "--depth-distill-embedding-weight", "5", "--depth-distill-class-weight",
            "3", "--depth-warmup-steps", "1", "--stage1-from", str(tmp_path / "s1"), "--out", str(tmp_path / "m"),
            "--eval-scenes", "8"]
    monkeypatch.setattr(sys, "argv", ["train_sandbox_clip.py", *argv])
    script.main()
    log = json.loads((tmp_path / "m" / "training_log.json").read_text())
    assert log["command"] == "python scripts/train_sandbox_clip.py " + " ".join(argv)
    assert log["stage1_wall_time_s"] == 60.0 and log["stage1_from"] == str(tmp_path / "s1")
    assert log["config"]["depth_distill_class_weight"] == 3.0 and log["config"]["depth_warmup_steps"] == 1
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert log["command"] in card and "1.0 min, test machine" in card and "weight 3.0 on the KL" in card
    # --eval-only rewrites the card from the log, command included
    (tmp_path / "m" / "MODEL_CARD.md").unlink()
    monkeypatch.setattr(sys, "argv", ["train_sandbox_clip.py", "--out", str(tmp_path / "m"), "--eval-only", "--eval-scenes", "8"])
    script.main()
    assert (tmp_path / "m" / "MODEL_CARD.md").read_text() == card
