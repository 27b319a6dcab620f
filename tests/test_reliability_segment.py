"""Nothing lost, nothing silently wrong: the segment commit protocol, provenance, damage,
signals and bad input, end to end through the CLI where it can be."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import pytest
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.cohort import commit
from cerberus_cli.model.registry import available_models
from tests._slide_fixtures import corrupt_tile, smooth_image, write_variant

FAST = ["--tile", "208", "--workers", "0", "--post-workers", "0", "--batch-size", "2",
        "--no-overlay"]
CLI = [sys.executable, "-m", "cerberus_cli"]


def run(*args: str):
    return CliRunner().invoke(main, ["-q", *args])


def final_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def done(phantom_slide, tmp_path_factory):
    """An uninterrupted run: the reference every other run is compared with."""
    out = tmp_path_factory.mktemp("done")
    res = run("segment", str(phantom_slide), "-o", str(out), *FAST)
    assert res.exit_code == 0, res.output
    return out


def uuids(folder: Path, stem: str = "phantom") -> set[str]:
    return set(gpd.read_parquet(folder / f"{stem}.parquet").uuid)


def test_record_lists_every_file_and_a_plain_rerun_skips(done, phantom_slide):
    record = commit.read_commit(done, "phantom")
    assert record is not None and record["status"] == "done"
    assert set(record["files"]) | {"phantom.run.json"} == set(final_files(done))
    res = run("segment", str(phantom_slide), "-o", str(done), *FAST, "--json")
    assert res.exit_code == 0
    assert json.loads(res.stdout)["slides"][0]["status"] == "skipped"
    # The same weights named by their file rather than by registry name: still the same run.
    res = run("segment", str(phantom_slide), "-o", str(done), *FAST, "--json",
              "--model", str(available_models()["default"]))
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["slides"][0]["status"] == "skipped"


def test_a_changed_file_is_not_complete(done, tmp_path):

    copy = tmp_path / "copy"
    shutil.copytree(done, copy)
    (copy / "phantom.parquet").write_bytes(b"truncated")
    assert commit.read_commit(copy, "phantom") is None


def test_skip_checks_provenance(done, phantom_slide, tmp_path):

    out = tmp_path / "o"
    shutil.copytree(done, out)
    # Another option that changes results: refused with what differs, nothing touched.
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    res = run("segment", str(phantom_slide), "-o", str(out), *FAST, "--nuclei-threshold", "0.6")
    assert res.exit_code == 1 and "--nuclei-threshold" in res.output and "--overwrite" in res.output
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # Another slide under the same name.
    other = tmp_path / "slides" / "phantom.svs"
    other.parent.mkdir()
    write_variant(other, smooth_image(512, 512, seed=3))
    res = run("segment", str(other), "-o", str(out), *FAST)
    assert res.exit_code == 1 and "slide content" in res.output
    # --overwrite redoes it, and the new record names the new slide.
    res = run("segment", str(other), "-o", str(out), *FAST, "--overwrite")
    assert res.exit_code == 0, res.output
    record = commit.read_commit(out, "phantom")
    assert record["provenance"]["input"]["path"] == str(other.resolve())


@pytest.mark.parametrize("die_after", [0, 1, 3, 100])
def test_interrupted_swap_is_old_or_new_and_the_next_run_finishes_it(done, tmp_path, die_after,
                                                                       monkeypatch):
    """A death after any number of moves of an --overwrite swap: the folder holds the old
    complete set or no committed set (never a mixed one), and recovery gives the new set."""

    out = tmp_path / "o"
    shutil.copytree(done, out)
    old = commit.read_commit(out, "phantom")
    slide = commit.SlideCommit(out, "phantom")
    staging = slide.begin()
    for name in [*old["files"], "phantom.run.json"]:
        src = out / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, staging / name)
    new_record = json.loads((staging / "phantom.run.json").read_text())
    new_record["finished"] = "new"
    (staging / "phantom.run.json").write_text(json.dumps(new_record))
    moves = {"n": 0}
    real_replace = os.replace

    def dying_replace(src, dst):
        if moves["n"] >= die_after:
            raise KeyboardInterrupt  # stands in for kill -9 between two renames
        moves["n"] += 1
        real_replace(src, dst)

    monkeypatch.setattr(commit.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        slide.commit()
        raise KeyboardInterrupt  # the swap finished before the death: also fine
    monkeypatch.setattr(commit.os, "replace", real_replace)
    seen = commit.read_commit(out, "phantom")
    assert seen is None or seen["finished"] in (old["finished"], "new")
    commit.SlideCommit(out, "phantom").recover()  # what the next run does first, then its clean-up
    commit.clean_stale(out)
    # Dying before the journal was written (the first rename) leaves the old set, whole;
    # any later death is rolled forward to the new set.
    expected = old["finished"] if die_after == 0 else "new"
    assert commit.read_commit(out, "phantom")["finished"] == expected
    assert not [n for n in hidden(out) if not n.startswith(".phantom.staging.")]


def test_kill_9_then_rerun_gives_the_uninterrupted_outputs(done, phantom_slide, tmp_path):
    out = tmp_path / "o"
    proc = subprocess.Popen([*CLI, "segment", str(phantom_slide), "-o", str(out), *FAST],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.exists() and any(out.glob(".phantom.staging.*"))):
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not final_files(out) or commit.read_commit(out, "phantom") is not None
    res = run("segment", str(phantom_slide), "-o", str(out), *FAST)
    assert res.exit_code == 0, res.output
    assert uuids(out) == uuids(done)
    assert not hidden(out)  # the dead run's staging folder was removed


def test_sigterm_stops_cleanly(phantom_slide, tmp_path):
    out = tmp_path / "o"
    proc = subprocess.Popen([*CLI, "segment", str(phantom_slide), "-o", str(out), *FAST],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.exists() and any(out.glob(".phantom.staging.*"))):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    assert final_files(out) == [] and hidden(out) == []


def test_dead_runs_leftovers_are_removed(phantom_slide, done, tmp_path):

    out = tmp_path / "o"
    shutil.copytree(done, out)
    host = socket.gethostname().split(".")[0]
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = out / f".phantom.staging.{host}.{dead.pid}"
    stale.mkdir()
    (stale / "phantom.parquet.1234.partial").write_bytes(b"x")
    (out / ".old.abc.work").mkdir()
    res = run("segment", str(phantom_slide), "-o", str(out), *FAST)
    assert res.exit_code == 0
    assert not hidden(out)


def test_damaged_tiles_are_a_result(tmp_path):
    slide = tmp_path / "damaged.svs"
    write_variant(slide, smooth_image(640, 640, seed=1), layout="svs")
    corrupt_tile(slide, page=0, tile=3)
    out = tmp_path / "o"
    res = run("segment", str(slide), "-o", str(out), *FAST, "--mpp", "0.5", "--tissue-method",
              "all", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["slides"][0]["status"] == "done with damage"
    record = commit.read_commit(out, "damaged")
    assert record["status"] == "done with damage" and record["damage"]["unreadable"] >= 1
    assert record["damage"]["positions"]
    res = run("segment", str(slide), "-o", str(tmp_path / "o2"), *FAST, "--mpp", "0.5",
              "--tissue-method", "all", "--max-bad-tiles", "0")
    assert res.exit_code == 1 and "--max-bad-tiles" in res.output
    assert final_files(tmp_path / "o2") == [] and hidden(tmp_path / "o2") == []


def test_implausible_tiles_are_detected():
    import numpy as np

    from cerberus_cli.inference.loader import implausible

    assert implausible(np.full((64, 64, 3), (0, 255, 0), np.uint8))      # pure green block
    assert implausible(np.full((64, 64, 3), 128, np.uint8))              # constant grey block
    assert not implausible(np.full((64, 64, 3), 243, np.uint8))          # glass
    assert not implausible(smooth_image(64, 64) // 2 + 100)              # texture


@pytest.mark.parametrize(("row", "message"), [
    ("x.svs,0", "line 2: mpp must lie in"),
    ("x.svs,-1", "line 2: mpp must lie in"),
    ("x.svs,nan", "line 2: mpp must lie in"),
    ("x.svs,abc", "line 2: mpp 'abc' is not a number"),
])
def test_manifest_rows_are_validated(tmp_path, row, message):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,mpp\n{row}\n")
    res = run("segment", "--manifest", str(manifest), "-o", str(tmp_path / "o"))
    assert res.exit_code == 2 and message in res.output and str(manifest) in res.output
    assert not (tmp_path / "o").exists()


def test_header_only_manifest_and_bad_output_folders(tmp_path, phantom_slide):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,mpp\n")
    res = run("segment", "--manifest", str(manifest), "-o", str(tmp_path / "o"))
    assert res.exit_code == 2 and "lists no slides" in res.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run("segment", str(phantom_slide), "-o", str(blocker / "sub"))
    assert res.exit_code == 2 and str(blocker / "sub") in res.output
    assert "Traceback" not in res.output



def test_unreadable_subfolder_is_a_failed_input(tmp_path, monkeypatch):
    """The listing error is injected: CI runs as root, and root reads every folder."""
    from cerberus_cli.cohort import inputs

    folder = tmp_path / "slides"
    (folder / "locked").mkdir(parents=True)
    real_walk = os.walk

    def walk(top, onerror=None, **kw):
        for root, dirs, files in real_walk(top, onerror=onerror, **kw):
            if Path(root).name == "locked" and onerror is not None:
                onerror(PermissionError(13, "Permission denied", root))
                dirs[:] = []
                continue
            yield root, dirs, files

    monkeypatch.setattr(inputs.os, "walk", walk)
    found = inputs.collect_inputs([str(folder)])
    assert [i.error for i in found] == [f"{folder / 'locked'}: folder cannot be read "
                                        "(Permission denied); its slides were not found"]


def test_post_processing_pool_serves_every_slide_of_a_run(done, phantom_slide, tmp_path):
    """Pool workers are started from a slide's consumer thread: they must outlive it."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b"):
        shutil.copy(phantom_slide, src / f"{name}{phantom_slide.suffix}")
    out = tmp_path / "o"
    fast = [*FAST[:4], "--post-workers", "1", *FAST[6:]]
    proc = subprocess.run([*CLI, "-q", "segment", str(src), "-o", str(out), *fast],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "leaked" not in proc.stderr
    # Object ids carry the slide's name: the same pixels give the same number of objects.
    assert len(uuids(out, "a")) == len(uuids(out, "b")) == len(uuids(done))


_ORPHAN = """
import multiprocessing as mp, sys, time
from cerberus_cli.core.processes import die_with_parent
def child(q):
    die_with_parent()
    q.put(mp.current_process().pid)
    time.sleep(60)
if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ctx.Process(target=child, args=(q,)).start()
    print(q.get(), flush=True)
    time.sleep(60)
"""


def test_workers_die_with_their_parent(tmp_path):
    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and Path(f"/proc/{worker}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{worker}").exists()
