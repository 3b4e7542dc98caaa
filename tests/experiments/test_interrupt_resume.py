"""A run stopped by SIGTERM records 'interrupted', keeps every finished split and item, and a resumed run
(with another number of dataloader workers) recomputes none of them and ends with the same files."""
import json
import os
import signal

import pytest

from falip.experiments.record import latest_run_folder
from falip.cli import compose
from falip.experiments.runner import RunInterrupted, run_experiment
from falip.tasks.rec import RecTask

SCENES = 24


def config(out, *extra):
    return compose(["experiment=shapes_rec", f"dataset.generator.scenes_per_split={SCENES}", "run.batch_size=8",
                    "run.progress=false", f"run.output_dir={out}", *extra])


@pytest.mark.slow
def test_sigterm_then_resume_with_other_workers_loses_and_recomputes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("FALIP_CACHE", str(tmp_path / "cache"))
    run_experiment(config(tmp_path / "reference"))

    scored, real_score = [], RecTask.score

    def score_then_sigterm(self, split, index, embeddings, context):
        scored.append((split.split, index))
        if split.split == "objects3" and len([s for s in scored if s[0] == "objects3"]) == 10:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to this process's handler: as a cluster would
        return real_score(self, split, index, embeddings, context)

    monkeypatch.setattr(RecTask, "score", score_then_sigterm)
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        run_experiment(config(out, "run.num_workers=0"))
    assert not (out / "shapes_rec.json").exists()  # the stable table: only a completed run updates it
    sidecar = json.loads((latest_run_folder(out, "shapes_rec") / "shapes_rec.json").read_text())
    assert sidecar["status"] == "interrupted" and "SIGTERM" in sidecar["error"]
    assert list(sidecar["columns"]) == ["objects2"]
    partial = latest_run_folder(out, "shapes_rec") / "predictions" / "objects3.jsonl.partial"
    kept = len(partial.read_text().splitlines()) - 1  # header + one row per finished item
    assert kept >= 9 and not (latest_run_folder(out, "shapes_rec") / "predictions" / "objects3.jsonl").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))

    monkeypatch.setattr(RecTask, "score", real_score)
    run_experiment(config(out, "run.resume=true", "run.num_workers=1"))
    sidecar = json.loads((out / "shapes_rec.json").read_text())
    assert sidecar["status"] == "complete"
    columns = sidecar["columns"]
    assert columns["objects2"]["resumed"] is True and "image_forwards" in columns["objects2"]
    assert columns["objects3"]["resumed_items"] == kept
    assert columns["objects3"]["image_forwards"]["FALIP"] == 3 * (SCENES - kept)  # only the items left
    assert columns["objects4"]["resumed_items"] == 0 and not partial.exists()
    assert (out / "shapes_rec.csv").read_bytes() == (tmp_path / "reference" / "shapes_rec.csv").read_bytes()
    for split in ("objects2", "objects3", "objects4"):
        assert ((latest_run_folder(out, "shapes_rec") / "predictions" / f"{split}.jsonl").read_bytes()
                == (latest_run_folder(tmp_path / "reference", "shapes_rec") / "predictions" / f"{split}.jsonl").read_bytes()), split
