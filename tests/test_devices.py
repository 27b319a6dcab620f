"""Several devices on one host (--devices): two CPU workers match one process; a worker killed
with SIGKILL loses no slide and half-writes none; SIGTERM stops every worker; bad specs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.cohort.device_list import resolve_devices
from cerberus_cli.cohort.status import read_status
from cerberus_cli.core.errors import InputError
from cerberus_cli.core.processes import pid_alive
from cerberus_cli.core.run_flags import parse_devices
from cerberus_cli.inference.options import SegmentOptions
from tests._cohort_fixtures import FAST, leftovers, object_ids, write_cohort

CLI = [sys.executable, "-m", "cerberus_cli"]
STEMS = [f"s{i}" for i in range(4)]


@pytest.fixture(scope="module")
def cohort(phantom_slide, tmp_path_factory) -> tuple[Path, Path]:
    return write_cohort(phantom_slide, tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="module")
def reference(cohort, tmp_path_factory) -> Path:
    """The cohort segmented by one process."""
    slides, mask = cohort
    out = tmp_path_factory.mktemp("one")
    res = CliRunner().invoke(main, ["-q", "segment", str(slides), "-o", str(out), *FAST,
                                    "--mask", str(mask)])
    assert res.exit_code == 0, res.output
    return out


def _summary(stdout: str) -> dict[str, dict]:
    return {Path(s["slide"]).stem: s for s in json.loads(stdout)["slides"]}


def test_two_cpu_workers_give_the_outputs_of_one_process(cohort, reference, tmp_path):
    slides, mask = cohort
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["-q", "segment", str(slides), "-o", str(out), *FAST, "--mask",
                                    str(mask), "--devices", "cpu,cpu", "--status", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert [Path(s["slide"]).stem for s in summary["slides"]] == STEMS  # input order
    assert summary["done"] == 4
    workers = set()
    for stem in STEMS:
        assert object_ids(out, stem) == object_ids(reference, stem)
        assert json.loads((out / f"{stem}.run.json").read_text())["objects"] == \
            json.loads((reference / f"{stem}.run.json").read_text())["objects"]
        status = read_status(out, stem)
        assert status["state"] == "done" and status["attempts"] == 1  # each slide done once
        workers.add(status["pid"])
    assert os.getpid() not in workers  # the slides ran in worker processes
    assert not torch.cuda.is_initialized()  # the parent never touched CUDA
    assert leftovers(out) == []
    # A second run skips everything without starting workers.
    again = CliRunner().invoke(main, ["-q", "segment", str(slides), "-o", str(out), *FAST, "--mask",
                                      str(mask), "--devices", "cpu,cpu", "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] == 4


def test_a_killed_worker_loses_nothing_and_the_exit_status_says_so(cohort, reference, tmp_path):
    slides, mask = cohort
    out = tmp_path / "out"
    hook = tmp_path / "kill"
    hook.mkdir()
    (hook / "s1.kill").touch()  # the worker on s1 kills itself (SIGKILL) mid-slide, once
    args = [*CLI, "-q", "segment", str(slides), "-o", str(out), *FAST, "--mask", str(mask),
            "--devices", "cpu,cpu", "--status", "--json"]
    env = {**os.environ, "CERBERUS_TEST_KILL_DIR": str(hook)}
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 1, res.stderr
    assert (hook / "s1.killed").exists()
    summary = _summary(res.stdout)
    assert summary["s1"]["status"] == "failed" and "SIGKILL" in summary["s1"]["message"]
    assert all(summary[s]["status"] == "done" for s in ("s0", "s2", "s3"))  # a new worker went on
    assert not (out / "s1.run.json").exists() and not list(out.glob("s1.*"))  # nothing half-written
    assert leftovers(out) == []  # the dead worker's claim and staging folder are gone
    status = read_status(out, "s1")
    assert status["state"] == "failed" and status["attempts"] == 1 and "SIGKILL" in status["error"]
    # The next run retries it.
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    summary = _summary(res.stdout)
    assert summary["s1"]["status"] == "done" and summary["s0"]["status"] == "skipped"
    assert read_status(out, "s1")["attempts"] == 2
    for stem in STEMS:
        assert object_ids(out, stem) == object_ids(reference, stem)


def test_sigterm_stops_every_worker_cleanly(cohort, tmp_path):
    slides, _ = cohort
    out = tmp_path / "out"
    # Whole slides (no mask), so that both workers are mid-slide when the signal comes.
    proc = subprocess.Popen([*CLI, "-q", "segment", str(slides), "-o", str(out), *FAST,
                             "--devices", "cpu,cpu", "--status"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (out.exists() and list(out.glob(".*.staging.*"))):
        time.sleep(0.05)
    workers = {int(p.name.rsplit(".", 1)[1]) for p in out.glob(".*.staging.*")}
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr
    assert "interrupted" in stderr
    assert leftovers(out) == []
    assert workers and not any(pid_alive(pid) for pid in workers)
    states = {stem: (read_status(out, stem) or {}).get("state") for stem in STEMS}
    assert "interrupted" in states.values() and "running" not in states.values()


def test_device_specs():
    assert parse_devices("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    assert parse_devices("cuda") == ["cuda:0"] and parse_devices("ALL") is None
    assert resolve_devices("cpu,cpu") == ["cpu", "cpu"]
    for bad in ("gpu", "cuda:x", "cpu,", ""):
        with pytest.raises(InputError, match="--devices"):
            parse_devices(bad)
    with pytest.raises(InputError, match="--device and --devices"):
        SegmentOptions(device="cpu", devices="cpu,cpu")
    with pytest.raises(InputError, match="--devices and --ray"):
        SegmentOptions(devices="cpu,cpu", ray="auto")
    if torch.cuda.device_count() == 0:
        with pytest.raises(InputError, match="no CUDA device"):
            resolve_devices("all")
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_devices("cuda:0,cuda:1")
    res = CliRunner().invoke(main, ["segment", "x.svs", "-o", "o", "--devices", "gpu0"])
    assert res.exit_code == 2 and "--devices" in res.stderr
