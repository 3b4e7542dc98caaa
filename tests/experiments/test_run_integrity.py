"""What a run guarantees on shared machines: resume by identity, one run per experiment folder, earlier
tables kept, stale 'running' sidecars, torn partial lines, planted links, full disks, generated data built
once under a lock."""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from falip.experiments.record import latest_run_folder
from falip.experiments.tables import read_table
from falip.cli import compose
from falip.errors import ConfigError
from falip.experiments.generated import build_generated_dataset, materialize
from falip.experiments.record import effective_status
from falip.experiments.runner import RunInterrupted, run_experiment
from falip.io import LockHeld, atomic_write_text, folder_lock, open_for_append
from falip.sandbox.datasets import write_shapes_rec
from falip.tasks.rec import RecTask

SPLITS = {"val": 3}


def refer_fixture(root: Path, scenes: int = 16) -> Path:
    write_shapes_rec(root, seed=5, scenes_per_split=scenes, width=96, height=80, splits=SPLITS,
                     dataset_dir="refcoco", split_by="unc", file_pattern="COCO_train2014_{:012d}.jpg")
    return root


def rec_config(data: Path, out: Path, *extra):
    return compose(["experiment=refcoco_rec", "model=sandbox", f"dataset.root={data}", "dataset.splits=[val]",
                    "prompts=backbones", "run.batch_size=8", "run.progress=false", f"run.output_dir={out}", *extra])


def drop_first_images(data: Path, count: int) -> None:
    """Remove every ref of the first ``count`` images from the refs pickle (same path, as a re-download would)."""
    path = data / "refcoco" / "refs(unc).p"
    refs = pickle.loads(path.read_bytes())
    gone = sorted({ref["image_id"] for ref in refs})[:count]
    path.write_bytes(pickle.dumps([ref for ref in refs if ref["image_id"] not in gone]))


def predictions(out: Path) -> list[dict]:
    """The predictions under the prompts that look at a region (Original CLIP gives every candidate the same
    embedding: its argmax breaks exact ties by float rounding, which depends on how rows were batched)."""
    folder = Path(json.loads((out / "refcoco_rec.json").read_text())["run_dir"])  # the last completed run's
    lines = [json.loads(line) for line in (folder / "predictions" / "val.jsonl").read_text().splitlines()]
    for line in lines:
        for key in ("pred", "correct"):
            line[key].pop("Original CLIP", None)
    return lines


def table(out: Path) -> str:
    return "\n".join(row for row in (out / "refcoco_rec.csv").read_text().splitlines() if not row.startswith("Original"))


def sigterm_after(monkeypatch, items: int):
    real, seen = RecTask.score, []

    def score(self, split, index, embeddings, context):
        seen.append(index)
        if len(seen) == items:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, split, index, embeddings, context)

    monkeypatch.setattr(RecTask, "score", score)
    return lambda: monkeypatch.setattr(RecTask, "score", real)


@pytest.mark.slow
def test_resume_after_the_split_changed_reuses_only_items_it_can_prove(tmp_path, monkeypatch, capsys):
    data = refer_fixture(tmp_path / "data")
    restore = sigterm_after(monkeypatch, 10)
    with pytest.raises(RunInterrupted):
        run_experiment(rec_config(data, tmp_path / "run"))
    restore()
    drop_first_images(data, 4)  # the split changed under the interrupted run
    resumed = run_experiment(rec_config(data, tmp_path / "run", "run.resume=true"))
    fresh = run_experiment(rec_config(data, tmp_path / "fresh"))
    assert predictions(tmp_path / "run") == predictions(tmp_path / "fresh")
    assert table(tmp_path / "run") == table(tmp_path / "fresh")
    details = resumed.splits["val"]
    assert details["resumed_items"] == 5 and details["stale_items"] == 4  # 9 finished before the kill, 4 gone
    assert "no longer match the split" in capsys.readouterr().err
    assert fresh.splits["val"]["num_images"] == 12

    # a finished split is recomputed when its annotations change, and equals a fresh run on the new data
    drop_first_images(data, 2)
    again = run_experiment(rec_config(data, tmp_path / "run", "run.resume=true"))
    fresh = run_experiment(rec_config(data, tmp_path / "fresh2"))
    assert "resumed" not in again.splits["val"] and again.splits["val"]["num_images"] == 10
    assert predictions(tmp_path / "run") == predictions(tmp_path / "fresh2")
    assert "annotations changed" in capsys.readouterr().err


@pytest.mark.slow
def test_a_torn_last_line_is_dropped_alone(tmp_path, monkeypatch):
    data = refer_fixture(tmp_path / "data")
    restore = sigterm_after(monkeypatch, 9)
    with pytest.raises(RunInterrupted):
        run_experiment(rec_config(data, tmp_path / "run"))
    restore()
    partial = latest_run_folder(tmp_path / "run", "refcoco_rec") / "predictions" / "val.jsonl.partial"
    text = partial.read_text()
    partial.write_text(text + text.splitlines()[-1][:25])  # the line a full disk or a kill cut short
    resumed = run_experiment(rec_config(data, tmp_path / "run", "run.resume=true"))
    assert resumed.splits["val"]["resumed_items"] == 8  # every whole line reused, the torn one alone dropped
    fresh = run_experiment(rec_config(data, tmp_path / "fresh"))
    assert predictions(tmp_path / "run") == predictions(tmp_path / "fresh")


def test_one_run_per_experiment_folder_and_the_lock_names_its_holder(tmp_path):
    lock = tmp_path / "out" / ".shapes_rec.lock"
    with folder_lock(lock, "demo"):
        with pytest.raises(LockHeld, match=f"process {os.getpid()} on "):
            with folder_lock(lock, "demo"):
                pass
    with folder_lock(lock, "demo"):  # released by the first holder
        pass
    # a holder killed with SIGKILL releases it (the kernel does): the next run is not blocked
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from falip.io import folder_lock\n"
                              f"with folder_lock({str(lock)!r}, 'x'):\n print('held', flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    with pytest.raises(LockHeld, match=f"process {child.pid} "):
        with folder_lock(lock, "demo"):
            pass
    child.kill()
    child.wait()
    with folder_lock(lock, "demo"):
        pass


@pytest.mark.slow
def test_a_second_run_into_the_same_named_folder_stops_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("FALIP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    config = compose(["experiment=shapes_rec", "dataset.generator.scenes_per_split=8", "prompts=backbones",
                      "run.progress=false", f"run.output_dir={out}", "run.name=mine"])
    folder = out / "runs" / "shapes_rec" / "mine"
    folder.mkdir(parents=True)
    with folder_lock(folder / ".lock", "the other run"):
        with pytest.raises(LockHeld, match="in use by process"):
            run_experiment({**config, "foveal": {**config["foveal"], "alpha": 2.0}})
    assert not (folder / "shapes_rec.json").exists() and not (out / "shapes_rec.json").exists()  # nothing written


@pytest.mark.slow
def test_runs_never_overwrite_each_other_and_collect_folds_their_folders(tmp_path, monkeypatch, capsys):
    """Two runs of one experiment with different overrides leave two folders with a complete table each; the
    stable <experiment>.csv is the last *completed* run's (an interrupted run never touches it); collect folds
    the run folders into one CSV and names the run it leaves out."""
    from falip.experiments.reports import collect_runs

    monkeypatch.setenv("FALIP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    base = ["experiment=shapes_rec", "dataset.generator.scenes_per_split=8", "prompts=backbones", "run.batch_size=8",
            "run.progress=false", f"run.output_dir={out}"]
    first = run_experiment(compose(base))
    second = run_experiment(compose([*base, "foveal.alpha=2.0"]))
    assert first.run_dir != second.run_dir and first.run_dir.parent == second.run_dir.parent == out / "runs" / "shapes_rec"
    for record in (first, second):
        assert json.loads(record.json_path.read_text())["status"] == "complete"
        assert read_table(record.csv_path).shape == (3, 3)
    assert (out / "shapes_rec.csv").read_bytes() == second.csv_path.read_bytes()  # the last completed run
    assert (first.run_dir / "predictions" / "objects2.jsonl").is_file()  # the first run's work is intact
    restore = sigterm_after(monkeypatch, 3)
    with pytest.raises(RunInterrupted):
        run_experiment(compose([*base, "foveal.alpha=4.0"]))
    restore()
    assert (out / "shapes_rec.csv").read_bytes() == second.csv_path.read_bytes()  # untouched by the interrupted run
    assert len(list((out / "runs" / "shapes_rec").iterdir())) == 3
    capsys.readouterr()
    frame = collect_runs([str(out / "runs" / "shapes_rec")], out / "collected.csv")
    assert sorted(frame["run"].unique()) == sorted([first.run_dir.name, second.run_dir.name])
    assert len(frame) == 2 * 3 * 3  # two runs x three prompts x three splits; the interrupted one left out
    assert "left out: status interrupted" in capsys.readouterr().err
    assert (out / "collected.csv").is_file()


def test_a_running_sidecar_whose_process_is_gone_reads_interrupted(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    import socket
    dead = {"status": "running", "process": {"host": socket.gethostname(), "pid": child.pid}}
    assert effective_status(dead) == "interrupted"
    assert effective_status({"status": "running", "process": {"host": socket.gethostname(), "pid": os.getpid()}}) == "running"
    assert effective_status({"status": "running", "process": {"host": "another-node", "pid": 1}}) == "running"
    assert effective_status({"status": "complete"}) == "complete"


def test_writes_never_follow_planted_links(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "table.csv.tmp").symlink_to(outside)  # the old fixed temp name
    (folder / "val.jsonl.partial").symlink_to(outside)
    atomic_write_text(folder / "table.csv", "a,b\n")
    with open_for_append(folder / "val.jsonl.partial", fresh=True) as handle:
        handle.write("line\n")
    assert outside.read_text() == "precious"
    assert (folder / "table.csv").read_text() == "a,b\n" and not (folder / "val.jsonl.partial").is_symlink()
    umask = os.umask(0)
    os.umask(umask)
    assert (folder / "table.csv").stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any file, not 0600
    (folder / "other.partial").symlink_to(outside)
    with pytest.raises(Exception, match="symbolic link"):
        open_for_append(folder / "other.partial", fresh=False)
    assert outside.read_text() == "precious"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp file of ours left behind


def test_generated_data_never_goes_to_a_user_root_that_does_not_hold_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FALIP_CACHE", str(tmp_path / "cache"))
    config = compose(["experiment=shapes_rec", "dataset.generator.scenes_per_split=2", f"dataset.root={tmp_path}/nonexistent"])
    with pytest.raises(ConfigError, match="does not hold this generated dataset"):
        materialize(config["dataset"])
    assert not (tmp_path / "nonexistent").exists()
    built = materialize({**config["dataset"], "root": None})["root"]  # into the cache ...
    assert materialize({**config["dataset"], "root": built})["root"] == built  # ... which a root may then name


GENERATE = """
import sys
from falip.experiments.generated import build_generated_dataset
print(build_generated_dataset({"_target_": "falip.sandbox.datasets.write_shapes_rec", "seed": 3,
                               "scenes_per_split": 40, "width": 96, "height": 80, "splits": {"objects2": 2, "objects3": 3}}))
"""


@pytest.mark.slow
def test_concurrent_first_builds_build_once_and_a_killed_build_leaves_nothing(tmp_path):
    env = {**os.environ, "FALIP_CACHE": str(tmp_path / "cache")}
    runs = [subprocess.Popen([sys.executable, "-c", GENERATE], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(3)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    folders = {out.strip() for out, _ in outputs}
    assert len(folders) == 1 and (Path(folders.pop()) / ".falip-generated.json").is_file()
    assert not list((tmp_path / "cache").glob(".*.tmp-*"))

    env["FALIP_CACHE"] = str(tmp_path / "cache2")
    run = subprocess.Popen([sys.executable, "-m", "falip.cli", "dataset.generator.scenes_per_split=400",
                            f"run.output_dir={tmp_path}/out", "run.progress=false"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "cache2").glob(".*.tmp-*")):
        time.sleep(0.05)
    assert list((tmp_path / "cache2").glob(".*.tmp-*")), "the build never started"
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=120)
    assert run.returncode != 0 and "Traceback" not in err
    assert not list((tmp_path / "cache2").glob(".*.tmp-*"))


def _can_mount(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True)
    if done.returncode == 0:
        subprocess.run(["umount", str(probe)])
        return True
    return False


@pytest.mark.slow
def test_a_full_disk_is_one_line_status_failed_no_temp_files_and_resume_finishes(tmp_path):
    if shutil.which("mount") is None or not _can_mount(tmp_path):
        pytest.skip("needs a tmpfs mount (root) to fill a disk")
    data = refer_fixture(tmp_path / "data", scenes=40)
    out = tmp_path / "small"
    out.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(out)], check=True)
    try:
        env = {**os.environ, "FALIP_CACHE": str(tmp_path / "cache")}
        command = [sys.executable, "-m", "falip.cli", "experiment=refcoco_rec", "model=sandbox", f"dataset.root={data}",
                   "dataset.splits=[val]", "run.progress=false", f"run.output_dir={out}"]
        filler = out / "filler"
        filler.write_bytes(b"x" * (228 * 1024))  # leave ~28 kB: the predictions of a few images
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "Traceback" not in done.stderr and "no space left on the device" in done.stderr
        assert json.loads((latest_run_folder(out, "refcoco_rec") / "refcoco_rec.json").read_text())["status"] == "failed"
        assert not (out / "refcoco_rec.json").exists() and not [p for p in out.rglob("*.tmp")]
        filler.unlink()  # space is back: the resumed run finishes, equal to a fresh one
        resumed = subprocess.run(command + ["run.resume=true"], env=env, capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        reference = tmp_path / "reference"
        subprocess.run(command[:-1] + [f"run.output_dir={reference}"], env=env, check=True, capture_output=True,
                       timeout=600)
        assert (out / "refcoco_rec.csv").read_bytes() == (reference / "refcoco_rec.csv").read_bytes()
        assert ((latest_run_folder(out, "refcoco_rec") / "predictions" / "val.jsonl").read_bytes()
                == (latest_run_folder(reference, "refcoco_rec") / "predictions" / "val.jsonl").read_bytes())
    finally:
        subprocess.run(["umount", str(out)])


def falip_cli(*overrides, env):
    return [sys.executable, "-m", "falip.cli", *overrides, "run.progress=false"]


def wait_for(predicate, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_sigkill_then_resume_reads_interrupted_and_finishes_correctly(tmp_path):
    data = refer_fixture(tmp_path / "data", scenes=60)
    env = {**os.environ, "FALIP_CACHE": str(tmp_path / "cache")}
    base = ["experiment=refcoco_rec", "model=sandbox", f"dataset.root={data}", "dataset.splits=[val]",
            "prompts=backbones", "run.batch_size=4"]
    out = tmp_path / "run"
    run = subprocess.Popen(falip_cli(*base, f"run.output_dir={out}", env=env), env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)

    def partial() -> Path:  # in the run's own folder, which the run creates
        folder = latest_run_folder(out, "refcoco_rec")
        return (folder or out) / "predictions" / "val.jsonl.partial"

    assert wait_for(lambda: partial().is_file() and len(partial().read_bytes().splitlines()) > 5)
    run.kill()  # SIGKILL: no handler runs, the sidecar still says "running"
    run.wait()
    assert not (out / "refcoco_rec.json").exists()  # the stable sidecar: only a completed run writes it
    sidecar = json.loads((latest_run_folder(out, "refcoco_rec") / "refcoco_rec.json").read_text())
    assert sidecar["status"] == "running" and sidecar["process"]["pid"] == run.pid
    assert effective_status(sidecar) == "interrupted"
    done = subprocess.run(falip_cli(*base, f"run.output_dir={out}", "run.resume=true", env=env), env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "reused from the interrupted run" in done.stderr
    subprocess.run(falip_cli(*base, f"run.output_dir={tmp_path / 'fresh'}", env=env), env=env, check=True,
                   capture_output=True, timeout=600)
    assert json.loads((out / "refcoco_rec.json").read_text())["status"] == "complete"
    assert predictions(out) == predictions(tmp_path / "fresh") and table(out) == table(tmp_path / "fresh")


@pytest.mark.slow
def test_concurrent_runs_each_get_a_folder_and_a_second_run_into_a_named_one_is_refused(tmp_path, monkeypatch):
    import threading

    data = refer_fixture(tmp_path / "data")
    env = {**os.environ, "FALIP_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "run"
    real, started, release = RecTask.score, threading.Event(), threading.Event()

    def held_score(self, split, index, embeddings, context):  # the first run stays mid-split until released
        started.set()
        release.wait(timeout=300)
        return real(self, split, index, embeddings, context)

    monkeypatch.setattr(RecTask, "score", held_score)
    first = threading.Thread(target=run_experiment, args=(rec_config(data, out, "run.name=shared"),))
    first.start()
    cli = ["experiment=refcoco_rec", "model=sandbox", f"dataset.root={data}", "dataset.splits=[val]",
           "prompts=backbones", "foveal.alpha=2.0", f"run.output_dir={out}"]
    try:
        assert started.wait(timeout=120)
        refused = subprocess.run(falip_cli(*cli, "run.name=shared", env=env), env=env, capture_output=True, text=True,
                                 timeout=600)
        alongside = subprocess.run(falip_cli(*cli, env=env), env=env, capture_output=True, text=True, timeout=600)
    finally:
        release.set()
        first.join(timeout=600)
    assert refused.returncode == 2 and f"in use by process {os.getpid()}" in refused.stderr, refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr
    assert alongside.returncode == 0, alongside.stderr[-2000:]  # another folder: it ran while the first held its own
    shared = json.loads((out / "runs" / "refcoco_rec" / "shared" / "refcoco_rec.json").read_text())
    assert shared["status"] == "complete" and shared["config"]["foveal"]["alpha"] == 8.0
    assert json.loads((out / "refcoco_rec.json").read_text())["config"]["foveal"]["alpha"] == 8.0  # completed last
    monkeypatch.setattr(RecTask, "score", real)
    run_experiment(rec_config(data, tmp_path / "fresh"))
    assert predictions(out) == predictions(tmp_path / "fresh") and table(out) == table(tmp_path / "fresh")


@pytest.mark.slow
def test_planted_links_in_the_output_folder_are_never_written_through(tmp_path):
    data = refer_fixture(tmp_path / "data")
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    out = tmp_path / "run"
    folder = out / "runs" / "refcoco_rec" / "planted"
    (folder / "predictions").mkdir(parents=True)
    for name in ("refcoco_rec.json.tmp", "refcoco_rec.csv.tmp"):
        (out / name).symlink_to(outside)
        (folder / name).symlink_to(outside)
    (folder / "predictions" / "val.jsonl.partial").symlink_to(outside)
    (folder / "predictions" / "val.jsonl.tmp").symlink_to(outside)
    run_experiment(rec_config(data, out, "run.name=planted"))
    run_experiment(rec_config(data, tmp_path / "fresh"))
    assert outside.read_text() == "precious"
    assert predictions(out) == predictions(tmp_path / "fresh")
