"""Training loses nothing and is never silently wrong.

A run killed with SIGKILL between any two of its checkpoint writes (metrics line,
best.pt, last.pt, metrics.csv), or before its first checkpoint, and then resumed
ends with weights, optimizer and RNG states and metrics bit-identical to an
uninterrupted run's; a torn metrics line is dropped with a warning; a corrupt or
inconsistent checkpoint is one error line; stale temporary files are removed;
unusable training files are listed, one line each, before any step.

The kills are real: each run is a ``cerberus train`` subprocess that, at the chosen
write, sends itself SIGKILL (the driver below patches the write to do so), or that
this test kills from outside.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
import torch
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.core.errors import CerberusError
from cerberus_cli.training import run_checkpoints as ckpt
from cerberus_cli.training.rundir import RunDir
from cerberus_cli.training.tempfiles import OwnedAtomicPath, remove_stale, stale_owner, write_file

CERBERUS = [sys.executable, "-m", "cerberus_cli"]
ROOT = Path(__file__).resolve().parent.parent

# A run small enough for seconds: 6 steps, a checkpoint and a validation every 2.
RUN_ARGS = ["--arch", "light", "--steps", "6", "--batch-size", "2", "--patch", "64", "--tissue-patch", "64",
            "--checkpoint-every", "2", "--val-every", "2", "--val-limit", "1", "--val-fraction", "0.34",
            "--log-every", "1", "--seed", "5"]
# How a run executes, the only options a resume takes from its command line.
RUNTIME = ["--workers", "0", "--threads", "1", "--no-progress"]
# The same in this process (CliRunner): --threads would change torch's thread count here.
RUNTIME_HERE = ["--workers", "0", "--no-progress"]

# Runs `cerberus ARGS...` and SIGKILLs itself at the NTH write of the kind POINT:
#   log-torn               half of a metrics.jsonl line written, then killed
#   before:NAME            the complete temporary file of NAME written, not yet renamed
#   torn:NAME              the temporary file of NAME cut to half its size
#   after:NAME             NAME renamed into place, nothing after it done
DRIVER = r"""
import json, os, signal, sys
from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.training.rundir import RunDir
point, nth, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
seen = [0]
def due():
    seen[0] += 1
    return seen[0] == nth
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if point == "log-torn":
    log = RunDir.log
    def torn_log(self, record):
        if due():
            line = json.dumps(record, sort_keys=True)
            with open(self.metrics_jsonl, "a") as f:
                f.write(line[: len(line) // 2])
            die()
        log(self, record)
    RunDir.log = torn_log
else:
    when, name = point.split(":")
    commit = AtomicPath.commit
    def killing_commit(self):
        if self.path.name != name or not due():
            return commit(self)
        if when == "torn":
            with open(self.tmp, "r+b") as f:
                f.truncate(self.tmp.stat().st_size // 2)
        if when == "after":
            commit(self)
        die()
    AtomicPath.commit = killing_commit
from cerberus_cli.cli import main
from cerberus_cli.core.errors import CerberusError
main(args, prog_name="cerberus")
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    # One thread everywhere: float sums must not depend on how work is split.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _cerberus(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CERBERUS, *args], capture_output=True, text=True, env=_env(), timeout=600)


def _killed_at(point: str, nth: int, *args: str) -> subprocess.CompletedProcess:
    """Run ``cerberus ARGS`` until it kills itself at ``point``; it must not finish."""
    res = subprocess.run([sys.executable, "-c", DRIVER, point, str(nth), *args], capture_output=True,
                         text=True, env=_env(), timeout=600)
    assert res.returncode == -signal.SIGKILL, (point, nth, res.returncode, res.stderr[-2000:])
    return res


def _ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    return res


def _one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "phantom"
    res = CliRunner().invoke(main, ["synth", "tiles", "-o", str(out), "--count", "3", "--size", "64",
                                    "--tasks", "nuclei,tissue"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def reference(phantom, tmp_path_factory) -> Path:
    """An uninterrupted run: what every interrupted one must end up as, bit for bit."""
    run = tmp_path_factory.mktemp("ref") / "run"
    _ok(_cerberus("train", "-o", str(run), "--data", str(phantom), *RUN_ARGS, *RUNTIME))
    return run


def _same(a: Any, b: Any, where: str = "") -> None:
    """Assert ``a`` and ``b`` are equal, tensors bit for bit, recursing into containers."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, sorted(a), sorted(b))
        for k in a:
            _same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def _records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] != "summary"]  # summaries hold timings


def _assert_same_run(run: Path, reference: Path) -> None:
    """Weights, optimizer, RNG states, best model and metrics of ``run`` are the reference's."""
    a = torch.load(reference / "checkpoints/last.pt", weights_only=True)
    b = torch.load(run / "checkpoints/last.pt", weights_only=True)
    _same(a["state_dict"], b["state_dict"], "weights")
    _same(a["training_state"], b["training_state"], "training_state")  # optimizer, RNG, metrics offset
    best_a = torch.load(reference / "checkpoints/best.pt", weights_only=True)
    best_b = torch.load(run / "checkpoints/best.pt", weights_only=True)
    _same(best_a["state_dict"], best_b["state_dict"], "best")
    records = _records(run)
    assert records == _records(reference)
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]  # none twice
    csv_rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 1 + len((run / "metrics.jsonl").read_text().splitlines())
    leftovers = [p.name for p in (*run.iterdir(), *(run / "checkpoints").iterdir())
                 if p.name.startswith(".") or p.name.endswith(".partial")]
    assert not leftovers and not (run / "checkpoints/last.state.pt").exists(), leftovers


# --- kill -9, then --resume ------------------------------------------------------------

def test_kill_between_any_two_checkpoint_writes_then_resume_is_bit_identical(phantom, reference, tmp_path):
    run = str(tmp_path / "run")
    resume = ["train", "-o", run, "--resume", *RUNTIME]
    # Torn metrics line: steps 1, 2 (checkpoint), 3 logged, then half of step 4's line.
    _killed_at("log-torn", 5, "train", "-o", run, "--data", str(phantom), *RUN_ARGS, *RUNTIME)
    assert not (tmp_path / "run/metrics.jsonl").read_text().endswith("\n")
    # Resumed from step 2, the torn line is dropped with a warning; killed again with the
    # step-4 checkpoint complete under its temporary name.
    res = _killed_at("before:last.pt", 1, *resume)
    assert "dropped a torn last line" in res.stderr
    assert [p for p in (tmp_path / "run/checkpoints").iterdir() if p.name.endswith(".partial")]
    # Again from step 2 (the stale temporary file goes): the new step-4 file torn mid-write.
    _killed_at("torn:last.pt", 1, *resume)
    # Again from step 2: killed right after the step-4 checkpoint, before metrics.csv.
    _killed_at("after:last.pt", 1, *resume)
    assert torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)["training_state"]["step"] == 4
    # From step 4: step 5 logged, step 6's line torn before the last checkpoint.
    _killed_at("log-torn", 2, *resume)
    _ok(_cerberus(*resume))
    _assert_same_run(tmp_path / "run", reference)


def test_run_killed_before_its_first_checkpoint_resumes_from_scratch(phantom, reference, tmp_path):
    run = tmp_path / "run"
    args = ["train", "-o", str(run), "--data", str(phantom), *RUN_ARGS, *RUNTIME]
    # best.pt of step 2 is written just before the first last.pt: kill in between.
    _killed_at("after:best.pt", 1, *args)
    assert (run / "checkpoints/best.pt").is_file() and not (run / "checkpoints/last.pt").exists()
    _one_line_error(_cerberus(*args), "stopped before its first checkpoint", "--resume", "--overwrite")
    res = _ok(_cerberus("train", "-o", str(run), "--resume", *RUNTIME))
    assert "starting it again from step 0" in res.stderr
    _assert_same_run(run, reference)


def test_sigkill_from_outside_then_resume_is_bit_identical(phantom, reference, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([*CERBERUS, "train", "-o", str(run), "--data", str(phantom), *RUN_ARGS, *RUNTIME],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    try:
        # Kill once the first checkpoint is there and the run is into its next steps.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
            if (run / "checkpoints/last.pt").is_file() and len(lines) >= 4:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(60)
    if proc.returncode == 0:
        pytest.skip("the run finished before it could be killed")
    assert proc.returncode == -signal.SIGKILL
    _ok(_cerberus("train", "-o", str(run), "--resume", *RUNTIME))
    _assert_same_run(run, reference)


# --- damaged checkpoints and folders ------------------------------------------------------

def _copy_run(reference: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    return run


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_corrupt_checkpoint_is_one_line_error(reference, tmp_path, damage):
    run = _copy_run(reference, tmp_path)
    last = run / "checkpoints/last.pt"
    data = bytearray(last.read_bytes())
    if damage == "flip":
        # A byte in the middle of the weights: the zip container still reads, the digest does not match.
        data[len(data) // 3] ^= 0xFF
        last.write_bytes(bytes(data))
    elif damage == "truncate":
        last.write_bytes(bytes(data[: len(data) // 2]))
    else:
        last.write_bytes(b"")
    before = (run / "metrics.jsonl").read_bytes()
    res = CliRunner().invoke(main, ["train", "-o", str(run), "--resume", "--steps", "8", *RUNTIME_HERE])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and f"{last}:" in res.output
    assert ("corrupt" in res.output) or ("truncated" in res.output) or ("empty" in res.output), res.output
    assert (run / "metrics.jsonl").read_bytes() == before  # nothing touched


def test_checkpoint_of_an_earlier_version_must_be_consistent(reference, tmp_path):
    """Weights and state in two files (earlier versions): a pair from different steps is refused."""
    run = _copy_run(reference, tmp_path)
    last = run / "checkpoints/last.pt"
    obj = torch.load(last, weights_only=True)
    state = obj.pop("training_state")
    obj.pop("digest")
    torch.save(obj, last)  # weights of step 6
    torch.save({"step": 4, "optimizer": state["optimizer"], "scaler": None, "torch_rng": state["rng"]["torch"],
                "cuda_rng": [], "best_score": state["best_score"], "best_metrics": state["best_metrics"]},
               run / "checkpoints/last.state.pt")
    res = CliRunner().invoke(main, ["train", "-o", str(run), "--resume", "--steps", "8", *RUNTIME_HERE])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "step 6 but last.state.pt from step 4" in res.output
    # The same pair from one step loads, with the run's options and state.
    torch.save({"step": 6, "optimizer": state["optimizer"], "scaler": None, "torch_rng": state["rng"]["torch"],
                "cuda_rng": [], "best_score": state["best_score"], "best_metrics": state["best_metrics"]},
               run / "checkpoints/last.state.pt")
    point = ckpt.load_training(last)
    assert point.legacy and point.state.step == 6 and point.state.metrics is None
    _same(point.state.optimizer, state["optimizer"])


def test_training_checkpoint_is_a_model_checkpoint_with_verified_state(reference):
    from cerberus_cli.model.checkpoint import load_checkpoint

    last = reference / "checkpoints/last.pt"
    model = load_checkpoint(last).model  # --init, segment and model read it as any model
    point = ckpt.load_training(last)
    _same(model.state_dict(), point.model.state_dict())
    state = point.state
    assert state.step == 6 and state.loader == {"next_step": 6, "seed": 5}
    assert set(state.rng) == {"python", "numpy", "torch", "cuda"}
    assert state.metrics["offset"] == len((reference / "metrics.jsonl").read_bytes()) - len(
        (reference / "metrics.jsonl").read_text().splitlines()[-1]) - 1  # up to the summary line
    obj = torch.load(last, weights_only=True)
    assert obj["digest"] == ckpt.content_digest(obj)


def test_rng_states_round_trip():
    import random

    outside = ckpt.capture_rng()
    try:
        random.seed(1), np.random.seed(2), torch.manual_seed(3)
        saved = ckpt.capture_rng()
        expected = (random.random(), np.random.rand(), torch.rand(1))
        random.seed(9), np.random.seed(9), torch.manual_seed(9)
        ckpt.restore_rng(saved)
        assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    finally:
        ckpt.restore_rng(outside)  # other tests in this process see the states they had


# --- metrics.jsonl on resume --------------------------------------------------------------

def _lines(*records: dict) -> bytes:
    return b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in records)


def test_metrics_after_the_checkpoint_offset_are_cut_torn_line_with_warning(tmp_path, caplog):
    run = RunDir(tmp_path)
    run.metrics_jsonl.write_bytes(_lines({"kind": "train", "step": 1}, {"kind": "train", "step": 2}))
    mark = run.metrics_mark()
    with open(run.metrics_jsonl, "ab") as f:
        f.write(_lines({"kind": "train", "step": 3}) + b'{"kind": "train", "st')
    run.restore_metrics(mark, 2)
    assert run.metrics_jsonl.read_bytes() == _lines({"kind": "train", "step": 1}, {"kind": "train", "step": 2})
    assert "dropped a torn last line" in caplog.text


def test_metrics_not_as_recorded_keep_readable_records_up_to_the_step(tmp_path, caplog):
    run = RunDir(tmp_path)
    run.metrics_jsonl.write_bytes(_lines({"kind": "train", "step": 1}) + b"garbage\n"
                                  + _lines({"kind": "val", "step": 2}, {"kind": "train", "step": 3})
                                  + b'{"kind": "tr')
    run.restore_metrics(None, 2)  # a checkpoint of an earlier version records no offset
    assert run.metrics_jsonl.read_bytes() == _lines({"kind": "train", "step": 1}, {"kind": "val", "step": 2})
    assert "line 2, not a JSON record" in caplog.text and "dropped a torn last line" in caplog.text
    assert [r["step"] for r in run.records()] == [1, 2]


# --- folders, temporary files --------------------------------------------------------------

def test_run_folder_states(tmp_path):
    missing = tmp_path / "new"
    assert RunDir.prepare(missing, resume=False, overwrite=False)[1] == "new"
    with pytest.raises(Exception, match="nothing to resume"):
        RunDir.prepare(missing, resume=True, overwrite=False)
    # The remains of a run that never reached a checkpoint: resumable (from scratch) or replaceable.
    stub = tmp_path / "stub"
    (stub / "checkpoints").mkdir(parents=True)
    (stub / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    assert RunDir.prepare(stub, resume=True, overwrite=False)[1] == "restart"
    assert RunDir.prepare(stub, resume=False, overwrite=True)[1] == "new"
    with pytest.raises(Exception, match="stopped before its first checkpoint"):
        RunDir.prepare(stub, resume=False, overwrite=False)
    RunDir(stub).create({"options": {}})
    assert sorted(p.name for p in stub.iterdir()) == ["checkpoints", "config.json"]
    # A run with the user's own notes in it: --overwrite replaces the run's files only.
    (stub / "notes.txt").write_text("mine")
    (stub / "checkpoints/last.pt").write_bytes(b"weights")
    assert RunDir.prepare(stub, resume=False, overwrite=True)[1] == "new"
    RunDir(stub).create({"options": {}})
    assert sorted(p.name for p in stub.iterdir()) == ["checkpoints", "config.json", "notes.txt"]
    assert not (stub / "checkpoints/last.pt").exists()
    # A run folder that cannot be made is refused before any work.
    (tmp_path / "file").write_text("x")
    with pytest.raises(Exception, match="cannot be created: .*file is not a folder"):
        RunDir.prepare(tmp_path / "file/run", resume=False, overwrite=False)
    # Somebody else's folder is never touched.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for resume, overwrite in ((False, False), (False, True), (True, False)):
        with pytest.raises(Exception, match="run directory"):
            RunDir.prepare(foreign, resume=resume, overwrite=overwrite)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_are_removed_live_ones_kept(tmp_path):
    atomic = OwnedAtomicPath(tmp_path / "last.pt")
    assert f"~{os.getpid()}~" in atomic.tmp.name
    atomic.tmp.write_bytes(b"mine, still being written")
    dead = _dead_pid()
    host = atomic.tmp.name.split("~")[1]
    files = {
        "dead": f".last.pt~{host}~{dead}~0123abcd.partial",
        "live": f".metrics.csv~{host}~{os.getppid()}~0123abcd.partial",
        "other-host": f".last.pt~elsewhere.example~{dead}~0123abcd.partial",
        "legacy": f".last.pt.tmp-{dead}",
        "legacy-state": ".last.state.pt.tmp",
        "user": "notes.partial.txt",
    }
    for name in files.values():
        (tmp_path / name).write_text("x")
    removed = {p.name for p in remove_stale(tmp_path)}
    assert removed == {files["dead"], files["legacy"], files["legacy-state"]}
    assert atomic.tmp.is_file() and stale_owner(atomic.tmp.name) is None
    atomic.abort()


def test_a_failed_write_names_the_file_and_leaves_nothing(tmp_path):
    def disk_full(tmp: Path) -> None:
        tmp.write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CerberusError, match="last.pt: cannot be written: No space left on device"):
        write_file(tmp_path / "last.pt", disk_full)
    assert list(tmp_path.iterdir()) == []


# --- training data checked before the first step -------------------------------------------

def test_bad_training_files_listed_one_line_each_before_any_step(phantom, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(phantom, data)
    image = data / "nuclei/images/phantom_00000.png"
    image.write_bytes(b"\x89PNG not really")
    label = data / "nuclei/labels/phantom_00001.mat"
    scipy.io.savemat(str(label), {"inst_map": np.ones((32, 48), np.int32), "id": np.array([[1]], np.int32),
                                  "class": np.array([[1]], np.int32)})
    tissue = next((data / "tissue").rglob("*.png"))
    tissue.write_bytes(b"")
    run = tmp_path / "run"
    res = _cerberus("train", "-o", str(run), "--data", str(data), *RUN_ARGS, *RUNTIME)
    _one_line_error(res, "3 of 6 training items cannot be used")
    for bad in (image, label, tissue):
        assert sum(str(bad) in line for line in res.stderr.splitlines() if line.startswith("ERROR:")) == 1, bad
    assert not run.exists()  # nothing partial: the run folder is made only after the check


def test_type_values_outside_the_head_are_caught(tmp_path):
    import cv2

    from cerberus_cli.training.datacheck import check_datasets
    from cerberus_cli.training.datasets import open_dataset

    root = tmp_path / "nuclei"
    for sub in ("images", "instances", "classes"):
        (root / sub).mkdir(parents=True)
    cv2.imwrite(str(root / "images/a.png"), np.full((16, 16, 3), 200, np.uint8))
    inst = np.zeros((16, 16), np.uint16)
    inst[4:8, 4:8] = 1
    cv2.imwrite(str(root / "instances/a.png"), inst)
    cv2.imwrite(str(root / "classes/a.png"), (inst * 9).astype(np.uint8))  # nuclei types are 0..6
    ds = open_dataset("nuclei", root, "generic")
    assert ds.problem(0) == f"{root / 'classes/a.png'}: type values [9] outside 0..6 (or 255 for unknown)"
    with pytest.raises(Exception, match="1 of 1 training items cannot be used"):
        check_datasets([ds])


def test_dataset_modules_import_one_way():
    """formats/* and dataset_base never import training.datasets (no import cycle)."""
    pkg = ROOT / "cerberus_cli/training"
    for path in [pkg / "dataset_base.py", *sorted((pkg / "formats").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "cerberus_cli.training.datasets" not in imported, path
        if path.name == "dataset_base.py":
            assert not any(m.startswith("cerberus_cli.training.formats") for m in imported)
    for module in ("cerberus_cli.training.formats.generic", "cerberus_cli.training.formats.phantom"):
        res = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                             env=_env(), timeout=120)
        assert res.returncode == 0, res.stderr
