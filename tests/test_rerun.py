"""`cerberus segment --rerun S.run.json`: a slide re-run from its commit record."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.cohort.rerun import options_from_record

FAST = ["--tile", "208", "--workers", "0", "--post-workers", "0", "--batch-size", "2",
        "--no-overlay"]


def cli(*args: str):
    return CliRunner().invoke(main, ["-q", "segment", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def first(phantom_slide, tmp_path_factory) -> Path:
    """A run with a non-default post-processing threshold; returns its commit record."""
    out = tmp_path_factory.mktemp("first")
    res = cli(str(phantom_slide), "-o", str(out), *FAST, "--nuclei-threshold", "0.6")
    assert res.exit_code == 0, res.output
    return out / "phantom.run.json"


def _uuids(folder: Path) -> list[str]:
    return pq.read_table(folder / "phantom.parquet", columns=["uuid"]).column("uuid").to_pylist()


def test_rerun_reproduces_ids_and_options(first, tmp_path, phantom_slide):
    again = tmp_path / "again"
    # A speed option given anew: post-processing in a worker process this time.
    res = cli("--rerun", str(first), "-o", str(again), "--batch-size", "1", "--post-workers", "1")
    assert res.exit_code == 0, res.output
    old, new = json.loads(first.read_text()), json.loads((again / "phantom.run.json").read_text())
    assert new["provenance"]["options"] == old["provenance"]["options"]
    assert new["provenance"]["options"]["post"]["nuclei_threshold"] == 0.6
    assert new["options"]["batch_size"] == 1 and new["options"]["overlay"] is False
    assert new["options"]["post_workers"] == 1
    assert _uuids(again) == _uuids(first.parent) and _uuids(again)
    assert new["input"]["path"] == str(phantom_slide.resolve())
    # Default output: the record's own folder, where the same run is complete: skipped.
    before = first.stat().st_mtime_ns
    assert cli("--rerun", str(first)).exit_code == 0
    assert first.stat().st_mtime_ns == before


def test_peak_memory_per_process_kind(first, tmp_path):
    """Workers report their own peak RSS; without workers there is no worker figure."""
    in_main = json.loads(first.read_text())["peak_memory"]
    assert in_main["main_rss_mib"] > 0 and "postprocess_worker_rss_mib" not in in_main
    assert "children_rss_mib" not in in_main and "rss_mib" not in in_main
    res = cli("--rerun", str(first), "-o", str(tmp_path), "--post-workers", "1")
    assert res.exit_code == 0, res.output
    peak = json.loads((tmp_path / "phantom.run.json").read_text())["peak_memory"]
    assert peak["main_rss_mib"] > 0 and 0 < peak["postprocess_worker_rss_mib"]
    # A spawned worker holds no network: far less than the main process.
    assert peak["postprocess_worker_rss_mib"] < peak["main_rss_mib"]


def _tampered(record: Path, tmp_path: Path, change) -> Path:
    doc = json.loads(record.read_text())
    change(doc)
    path = tmp_path / "tampered.run.json"
    path.write_text(json.dumps(doc))
    return path


def test_rerun_refusals(first, tmp_path, phantom_slide):
    def refused(*args: str, says: str) -> None:
        res = CliRunner().invoke(main, ["segment", *args], catch_exceptions=False)
        assert res.exit_code == 2 and says in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1 or "Usage" in res.output

    refused("--rerun", str(first), "--nuclei-threshold", "0.5", says="--nuclei-threshold cannot")
    refused("--rerun", str(first), "--shard", "1/2", says="--shard does not apply")
    refused("--rerun", str(first), str(phantom_slide), says="give no SLIDES")
    other_model = _tampered(first, tmp_path, lambda d: d["provenance"].update(model_sha256="0" * 64))
    refused("--rerun", str(other_model), says=f"{other_model}: cannot re-run: model")
    other_slide = _tampered(first, tmp_path,
                            lambda d: d["provenance"]["input"].update(sha256_head_tail="1" * 64))
    refused("--rerun", str(other_slide), says="has changed since the run (fingerprint differs)")
    not_record = tmp_path / "x.run.json"
    not_record.write_text("{}")
    refused("--rerun", str(not_record), says="not a cerberus run record")
    # The library function gives the same options object back, speed options overridden.
    slide, options = options_from_record(first, {"workers": 3})
    assert slide == phantom_slide.resolve() and options.workers == 3
    assert options.post.nuclei_threshold == 0.6 and options.tile == 208 and not options.overwrite
