"""Ray (--ray): actors on a local Ray (started once for the module, 2 CPUs) give the outputs of a
one-process run, also when an actor is killed mid-slide; actor placement; Ray missing.

Ray is a test dependency (the ``ray`` extra, installed by scripts/setup.sh): not skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.cohort import claims
from cerberus_cli.cohort.inputs import SlideInput
from cerberus_cli.cohort.provenance import slide_provenance
from cerberus_cli.cohort.ray_runner import plan_actors
from cerberus_cli.cohort.slide_worker import SlideWorker
from cerberus_cli.cohort.status import read_status
from cerberus_cli.core.errors import InputError
from cerberus_cli.inference.options import SegmentOptions
from tests._cohort_fixtures import FAST, leftovers, object_ids, write_cohort

STEMS = [f"s{i}" for i in range(4)]


@pytest.fixture(scope="module")
def kill_dir(tmp_path_factory):
    """The test hook's folder, in the environment before Ray starts (its workers inherit it)."""
    folder = tmp_path_factory.mktemp("kill")
    before = os.environ.get("CERBERUS_TEST_KILL_DIR")
    os.environ["CERBERUS_TEST_KILL_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("CERBERUS_TEST_KILL_DIR", None)
    else:
        os.environ["CERBERUS_TEST_KILL_DIR"] = before


@pytest.fixture(scope="module")
def local_ray(kill_dir):
    """A private local Ray of 2 CPUs, light (no dashboard, a small object store)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             object_store_memory=80 * 2**20, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def cohort(phantom_slide, tmp_path_factory) -> tuple[Path, Path]:
    return write_cohort(phantom_slide, tmp_path_factory.mktemp("cohort"))


def test_actors_match_one_process_and_a_killed_actor_is_retried(local_ray, kill_dir, cohort, tmp_path):
    slides, mask = cohort
    reference = tmp_path / "one"
    res = CliRunner().invoke(main, ["-q", "segment", str(slides), "-o", str(reference), *FAST,
                                    "--mask", str(mask)])
    assert res.exit_code == 0, res.output
    (kill_dir / "s1.kill").touch()  # the actor on s1 kills itself (SIGKILL) mid-slide, once
    out = tmp_path / "ray"
    t0 = time.time()
    res = CliRunner().invoke(main, ["-q", "segment", str(slides), "-o", str(out), *FAST, "--mask",
                                    str(mask), "--device", "cpu", "--status", "--json", "--ray",
                                    "--ray-cpus", "1"])
    assert res.exit_code == 0, res.output
    print(f"ray run: {time.time() - t0:.1f} s", file=sys.stderr)
    assert (kill_dir / "s1.killed").exists()  # the actor did die mid-slide
    summary = json.loads(res.stdout)
    assert [Path(s["slide"]).stem for s in summary["slides"]] == STEMS
    assert [s["slide"] for s in summary["slides"]] == [str(slides / f"{s}.svs") for s in STEMS]
    assert summary["done"] == 4
    for stem in STEMS:
        assert object_ids(out, stem) == object_ids(reference, stem)
        assert json.loads((out / f"{stem}.run.json").read_text())["objects"] == \
            json.loads((reference / f"{stem}.run.json").read_text())["objects"]
        status = read_status(out, stem)
        assert status["state"] == "done" and status["attempts"] == (2 if stem == "s1" else 1)
    assert leftovers(out) == []  # the dead attempt's claim and staging folder are gone
    # Outputs of a Ray run count as complete for any runner.
    again = CliRunner().invoke(main, ["-q", "segment", str(slides), "-o", str(out), *FAST, "--mask",
                                      str(mask), "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] == 4


def test_a_retry_takes_over_its_dead_attempts_claim_on_another_host(cohort, tmp_path):
    """What a restarted actor does with the claim its dead attempt (another host) left: the
    ledger tells it the holder was one of the run's actors; the claim still looks alive."""
    slides, mask = cohort
    out = tmp_path / "out"
    out.mkdir()
    options = SegmentOptions(tile=208, workers=0, post_workers=0, batch_size=2, overlay=False,
                             mask=str(mask), device="cpu")
    item = SlideInput(slides / "s2.svs")
    now = time.time()
    claims.claim_path(out, "s2").write_text(json.dumps(
        {"host": "node7", "pid": 4242, "token": "t0", "start": now, "heartbeat": now, "timeout": 600}))
    (out / ".s2.staging.node7.4242").mkdir()
    with SlideWorker(out, options, "cpu") as worker:
        provenance = slide_provenance(item, options, worker.segmenter.loaded.sha256)
        outcome = worker.run(item, provenance)
        assert outcome.status == "running elsewhere" and "node7 pid 4242" in outcome.message
        outcome = worker.run(item, provenance, takeover=lambda h: (h.host, h.pid) == ("node7", 4242))
    assert outcome.status == "done", outcome.message
    assert leftovers(out) == []


def test_actor_placement():
    gpu_node = {"Alive": True, "Resources": {"CPU": 16.0, "GPU": 4.0}}
    small_gpu_node = {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 8.0}}
    cpu_node = {"Alive": True, "Resources": {"CPU": 8.0}}
    dead = {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}
    assert plan_actors([gpu_node, cpu_node, dead], "auto", 4) == ("cuda", 4)
    assert plan_actors([small_gpu_node], "cuda", 2) == ("cuda", 2)  # CPUs limit the GPU actors
    assert plan_actors([gpu_node, cpu_node], "cpu", 4) == ("cpu", 6)  # no GPU asked for
    assert plan_actors([cpu_node], "auto", 1) == ("cpu", 8)
    with pytest.raises(InputError, match="no GPU"):
        plan_actors([cpu_node], "cuda", 1)
    with pytest.raises(InputError, match="--ray-cpus"):
        plan_actors([cpu_node], "auto", 16)


def test_ray_options(tmp_path):
    assert SegmentOptions(ray="auto").ray == "auto"
    for address in ("local", "10.0.0.5:6379", "ray://head:10001", "head-node.cluster:6379"):
        SegmentOptions(ray=address)
    with pytest.raises(InputError, match="--ray takes"):
        SegmentOptions(ray="slides/")
    with pytest.raises(InputError, match="--device cuda:1 with --ray"):
        SegmentOptions(ray="auto", device="cuda:1")
    res = CliRunner().invoke(main, ["segment", "-o", "o", "--ray", "slides/"])
    assert res.exit_code == 2 and "write --ray auto" in res.stderr
    # Without Ray installed (in a process of its own, the module Ray keeps running here).
    slide = tmp_path / "s.svs"
    slide.write_bytes(b"x")
    code = ("import sys; sys.modules['ray'] = None; from cerberus_cli.cli import main; "
            f"main(['segment', {str(slide)!r}, '-o', {str(tmp_path / 'o')!r}, '--ray'])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert res.stderr.strip() == 'error: --ray needs Ray, which is not installed: ' \
        'pip install "cerberus-pathology[ray]"'
    assert not (tmp_path / "o").exists()  # refused before any work
