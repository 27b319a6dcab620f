"""Cohorts: shards, claims shared by concurrent runners, kill -9 and takeover, status."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import pytest
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.cohort import claims, commit
from cerberus_cli.cohort.shards import Shard, parse_shard, select, shard_of
from cerberus_cli.cohort.status import cohort_status, read_status
from cerberus_cli.core.errors import InputError
from cerberus_cli.core.processes import host
from tests._cohort_fixtures import FAST, write_cohort

CLI = [sys.executable, "-m", "cerberus_cli"]


# --- shards -------------------------------------------------------------------------------

def test_shards_partition_the_input_whatever_its_order():
    names = [f"TCGA-{i:04d}" for i in range(599)]
    for n in (1, 2, 3, 7, 10):
        parts = [select(names, Shard(i, n), key=str) for i in range(1, n + 1)]
        flat = [name for part in parts for name in part]
        assert sorted(flat) == sorted(names) and len(flat) == len(set(flat))  # union, no overlap
        shuffled = names[:]
        random.Random(n).shuffle(shuffled)
        for i, part in enumerate(parts, start=1):
            assert set(select(shuffled, Shard(i, n), key=str)) == set(part)
        if n == 10:
            assert min(map(len, parts)) > 30  # balanced on average
    assert shard_of("slide-1", 4) == shard_of("slide-1", 4)  # a pure function of name and N


def test_shard_specs():
    assert parse_shard("2/5") == Shard(2, 5)
    for bad in ("0/4", "5/4", "a/b", "3", "1/0"):
        with pytest.raises(InputError, match="--shard"):
            parse_shard(bad)
    env = {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "9",
           "SLURM_ARRAY_TASK_COUNT": "10"}
    assert parse_shard("slurm", env) == Shard(1, 10)
    assert parse_shard("slurm", {**env, "SLURM_ARRAY_TASK_ID": "9"}) == Shard(10, 10)
    one_based = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "4"}
    assert parse_shard("slurm", one_based) == Shard(3, 4)
    stepped = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0",
               "SLURM_ARRAY_TASK_MAX": "6", "SLURM_ARRAY_TASK_STEP": "2"}
    assert parse_shard("slurm", stepped) == Shard(3, 4)
    with pytest.raises(InputError, match="SLURM_ARRAY_TASK_ID"):
        parse_shard("slurm", {})
    res = CliRunner().invoke(main, ["segment", "x.svs", "-o", "o", "--shard", "0/3"])
    assert res.exit_code == 2 and "--shard" in res.stderr


# --- claims -------------------------------------------------------------------------------

def _fake_claim(folder: Path, stem: str, host: str, pid: int, heartbeat: float) -> None:
    claims.claim_path(folder, stem).write_text(json.dumps(
        {"host": host, "pid": pid, "token": "t0", "start": heartbeat, "heartbeat": heartbeat,
         "timeout": 60.0}))


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_one_claim_per_slide_and_dead_holders_are_taken_over(tmp_path):
    first = claims.acquire(tmp_path, "s", timeout=60)
    assert isinstance(first, claims.Claim)
    second = claims.acquire(tmp_path, "s", timeout=60)
    assert isinstance(second, claims.Holder) and second.pid == os.getpid()
    with first:
        time.sleep(0.05)
    assert not claims.claim_path(tmp_path, "s").exists()
    # Same host, process gone: taken over at once.
    _fake_claim(tmp_path, "s", host(), _dead_pid(), time.time())
    assert isinstance(claims.acquire(tmp_path, "s", timeout=60), claims.Claim)
    # Another host: alive while it beats, taken over after its timeout.
    _fake_claim(tmp_path, "t", "elsewhere", 1, time.time())
    assert isinstance(claims.acquire(tmp_path, "t", timeout=60), claims.Holder)
    _fake_claim(tmp_path, "t", "elsewhere", 1, time.time() - 61)
    assert claims.read_claim(tmp_path, "t").alive() is False
    taken = claims.acquire(tmp_path, "t", timeout=60)
    assert isinstance(taken, claims.Claim)
    # A runner whose claim was taken over does not commit.
    claims.claim_path(tmp_path, "t").unlink()
    _fake_claim(tmp_path, "t", "elsewhere", 1, time.time())
    with pytest.raises(claims.ClaimLost, match="elsewhere"):
        taken.check()


def test_heartbeat_refreshes_the_claim(tmp_path):
    claim = claims.acquire(tmp_path, "s", timeout=1.0)
    assert isinstance(claim, claims.Claim)
    with claim:
        before = claims.read_claim(tmp_path, "s")
        time.sleep(0.7)
        after = claims.read_claim(tmp_path, "s")
        assert before is not None and after is not None and after.heartbeat > before.heartbeat
        assert after.token == claim.token and after.alive()


# --- whole runs ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cohort(phantom_slide, tmp_path_factory) -> tuple[Path, Path]:
    """Four slides (copies of the phantom under other names) and a mask of one network tile."""
    return write_cohort(phantom_slide, tmp_path_factory.mktemp("cohort"))


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, "-q", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _status(out: Path, *extra: str):
    res = CliRunner().invoke(main, ["status", str(out), "--json", *extra])
    return res.exit_code, json.loads(res.stdout)


def test_three_concurrent_runners_do_each_slide_once(cohort, tmp_path):
    slides, mask = cohort
    out = tmp_path / "out"
    args = ["segment", str(slides), "-o", str(out), *FAST, "--mask", str(mask), "--status", "--json"]
    runners = [_start(args) for _ in range(3)]
    summaries = []
    for proc in runners:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
        summaries.append(json.loads(stdout))
    done: dict[str, int] = {}
    for summary in summaries:
        for s in summary["slides"]:
            assert s["status"] in ("done", "skipped", "running elsewhere"), s
            done[Path(s["slide"]).stem] = done.get(Path(s["slide"]).stem, 0) + (s["status"] == "done")
    assert done == {f"s{i}": 1 for i in range(4)}
    for i in range(4):
        assert commit.read_commit(out, f"s{i}") is not None
        assert len(gpd.read_parquet(out / f"s{i}.parquet")) == \
            json.loads((out / f"s{i}.run.json").read_text())["objects"]
        assert read_status(out, f"s{i}")["attempts"] == 1
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no claim, no staging
    code, status = _status(out)
    assert code == 0 and status["done"] == 4 and status["complete"]


def test_kill_9_mid_slide_then_restart_finishes(cohort, tmp_path):
    slides, mask = cohort
    out = tmp_path / "out"
    args = ["segment", str(slides / "s0.svs"), str(slides / "s1.svs"), "-o", str(out), *FAST,
            "--mask", str(mask), "--status"]
    proc = _start(args)
    deadline = time.time() + 300
    while time.time() < deadline and not (out.exists() and any(out.glob(".s0.staging.*"))):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    holder = claims.read_claim(out, "s0")
    assert holder is not None and holder.pid == proc.pid and not holder.alive()
    code, status = _status(out)
    assert code == 1 and status["stale"] == 1 and status["slides"][0]["slide"] == "s0"
    res = CliRunner().invoke(main, ["-q", *args, "--json"])
    assert res.exit_code == 0, res.output
    assert [s["status"] for s in json.loads(res.stdout)["slides"]] == ["done", "done"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert read_status(out, "s0")["attempts"] == 2 and read_status(out, "s0")["state"] == "done"
    code, status = _status(out)
    assert code == 0 and status["done"] == 2


def test_another_hosts_claim_is_respected_until_it_times_out(cohort, tmp_path):
    slides, mask = cohort
    out = tmp_path / "out"
    out.mkdir()
    _fake_claim(out, "s2", "elsewhere", 1, time.time())
    args = ["-q", "segment", str(slides / "s2.svs"), "-o", str(out), *FAST, "--mask", str(mask),
            "--json", "--claim-timeout", "30"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    slide = json.loads(res.stdout)["slides"][0]
    assert slide["status"] == "running elsewhere" and "elsewhere pid 1" in slide["message"]
    assert _status(out)[1]["running"] == 1
    _fake_claim(out, "s2", "elsewhere", 1, time.time() - 31)
    assert _status(out)[1]["running"] == 1  # by the holder's own timeout (60 s)...
    res = CliRunner().invoke(main, args)  # ...but this runner's --claim-timeout is 30 s
    assert res.exit_code == 0 and json.loads(res.stdout)["slides"][0]["status"] == "done"
    assert _status(out)[1]["done"] == 1


def test_status_lists_failed_and_pending_slides(cohort, tmp_path):
    slides, mask = cohort
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"not a slide")
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(f"path\n{bad}\n{slides / 's3.svs'}\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["-q", "segment", str(bad), "-o", str(out), *FAST, "--status"])
    assert res.exit_code == 1
    code, status = _status(out, "--manifest", str(manifest))
    assert code == 1 and status["failed"] == 1 and status["pending"] == 1
    failed = status["slides"][0]
    assert failed["slide"] == "bad" and "bad.svs" in failed["message"] and failed["attempts"] == 1
    human = CliRunner().invoke(main, ["status", str(out), "--manifest", str(manifest)])
    assert "1 failed" in human.output and "1 pending" in human.output
    assert cohort_status(out).count("failed") == 1  # the library returns data
    res = CliRunner().invoke(main, ["status", str(tmp_path / "missing")])
    assert res.exit_code == 2


def test_doctor_reports_versions_devices_and_the_output_folder(tmp_path):
    res = CliRunner().invoke(main, ["doctor", "-o", str(tmp_path / "new"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["torch"]["version"] and report["slides"]["openslide_library"]
    assert isinstance(report["cuda"], list) and report["cpu"]["usable"] >= 1
    assert report["output"]["writable"] and not report["output"]["exists"]
    assert not (tmp_path / "new").exists()  # checking creates nothing
    blocked = tmp_path / "file"
    blocked.write_text("x")
    res = CliRunner().invoke(main, ["doctor", "-o", str(blocked)])
    assert res.exit_code == 1 and "not a folder" in res.output and "OpenSlide" in res.output


def test_slurm_array_example_covers_the_cohort_once(cohort, tmp_path):
    slides, mask = cohort
    out = tmp_path / "out"
    script = Path(__file__).resolve().parents[1] / "examples" / "slurm_array.sh"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "CERBERUS_DEVICE": "cpu", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "1",
           "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_CPUS_PER_TASK": "1"}
    mine = {}
    for task in ("0", "1"):
        res = subprocess.run(["bash", str(script), str(slides), str(out), *FAST, "--mask", str(mask),
                              "--json", "-q"], env={**env, "SLURM_ARRAY_TASK_ID": task},
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr
        mine[task] = {Path(s["slide"]).stem for s in json.loads(res.stdout)["slides"]}
    assert mine["0"] | mine["1"] == {f"s{i}" for i in range(4)} and not mine["0"] & mine["1"]
    code, status = _status(out)
    assert code == 0 and status["done"] == 4
