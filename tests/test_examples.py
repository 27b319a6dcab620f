"""The workflows in examples/ and the container files.

Snakemake, the GDC manifest loop and the Python API script are run on two phantom slides;
the Slurm and Nextflow files (their engines cannot run here) and the Dockerfile are
checked against the CLI and the build context.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.cohort import commit
from cerberus_cli.cohort.status import read_status

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent
# One torch thread per example process: on a busy machine, OpenMP threads that wait for a
# core cost more CPU than they save (measured: this file's CPU time 43 s -> 25 s).
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
# One network tile per slide (with the mask below), everything in the main process.
FAST = ["--device", "cpu", "--tile", "160", "--margin", "48", "--workers", "0", "--post-workers", "0",
        "--batch-size", "2", "--no-overlay"]


@pytest.fixture(scope="module")
def two_slides(phantom_slide, tmp_path_factory) -> tuple[Path, Path]:
    """Two slides (copies of the phantom) in a folder, and a mask of one network tile."""
    root = tmp_path_factory.mktemp("examples")
    slides = root / "slides"
    slides.mkdir()
    for name in ("s0", "s1"):
        shutil.copy(phantom_slide, slides / f"{name}.svs")
    mask = root / "mask.geojson"
    square = [[200, 200], [300, 200], [300, 300], [200, 300], [200, 200]]
    mask.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [square]}}]}))
    return slides, mask


def _assert_complete(out: Path, stem: str) -> dict:
    """The slide's commit record is valid (every listed file there with its size) and matches its objects."""
    assert commit.read_commit(out, stem) is not None, f"{stem}: no valid commit record in {out}"
    record = json.loads((out / f"{stem}.run.json").read_text())
    assert record["status"] == "done"
    assert len(gpd.read_parquet(out / record["outputs"]["objects"])) == record["objects"]
    return record


def _status(out: Path, *extra: str) -> tuple[int, dict]:
    res = CliRunner().invoke(main, ["status", str(out), "--json", *extra])
    return res.exit_code, json.loads(res.stdout)


# --- flags used by the examples exist -------------------------------------------------------

def _cli_flags(*command: str) -> set[str]:
    res = CliRunner().invoke(main, [*command, "--help"])
    assert res.exit_code == 0
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", res.output)) | {"-o", "-q", "-v"}


_INVOCATION = re.compile(r"(?:\bcerberus|\$\{?CERBERUS\}?\"?|\{params\.cerberus\})\s+(segment|status)\b(.*)")


def _used_flags(text: str) -> dict[str, set[str]]:
    """Flags passed to `cerberus segment` / `cerberus status` in a script (continued lines joined)."""
    used: dict[str, set[str]] = {"segment": set(), "status": set()}
    for line in re.sub(r"\\\\?\n", " ", text).splitlines():
        for command, rest in _INVOCATION.findall(line):
            used[command] |= set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[oqv])\b", rest))
    return used


def _options_string(text: str, pattern: str) -> set[str]:
    found = re.search(pattern, text, re.M)
    assert found, pattern
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", found.group(1)))


def test_examples_use_only_existing_flags():
    segment, status = _cli_flags("segment"), _cli_flags("status")
    slurm = _used_flags((EXAMPLES / "slurm_array.sh").read_text())
    gdc = _used_flags((EXAMPLES / "gdc_manifest.sh").read_text())
    nf = (EXAMPLES / "nextflow" / "main.nf").read_text()
    nf_config = (EXAMPLES / "nextflow" / "nextflow.config").read_text()
    snakefile = (EXAMPLES / "snakemake" / "Snakefile").read_text()
    sm_config = (EXAMPLES / "snakemake" / "config.yaml").read_text()
    used = {
        "slurm_array.sh": slurm["segment"],
        "gdc_manifest.sh": gdc["segment"],
        "gdc_manifest.sh status": gdc["status"],
        "main.nf": _used_flags(nf)["segment"] | _options_string(nf, r'"(--model) \$\{params\.model\}"'),
        "nextflow.config": _options_string(nf_config, r"^\s*options\s*=\s*'([^']*)'"),
        "Snakefile": _used_flags(snakefile)["segment"] | _options_string(snakefile, r'f"(--model) \{'),
        "config.yaml": _options_string(sm_config, r'^options:\s*"([^"]*)"'),
    }
    for name, flags in used.items():
        allowed = status if name.endswith("status") else segment
        assert flags, f"{name}: no flags found (the check would be empty)"
        assert flags <= allowed, f"{name}: {sorted(flags - allowed)} are not options of cerberus"
    assert {"--shard", "--status"} <= used["slurm_array.sh"]
    assert {"--manifest", "--status"} <= used["gdc_manifest.sh"]
    assert {"--manifest", "--slides-dir"} <= used["gdc_manifest.sh status"]
    assert "--workers" in used["main.nf"] and "--status" in used["Snakefile"]


def test_shell_examples_parse():
    for script in (EXAMPLES / "slurm_array.sh", EXAMPLES / "gdc_manifest.sh", ROOT / "scripts" / "build_image.sh"):
        res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert res.returncode == 0, f"{script.name}: {res.stderr}"
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
    res = subprocess.run([str(ROOT / "scripts" / "build_image.sh"), "--engine", "lxc"], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip() == "error: --engine must be docker, podman or rootfs, not 'lxc'"


def test_nextflow_pipeline_declares_its_settings():
    nf = (EXAMPLES / "nextflow" / "main.nf").read_text()
    config = (EXAMPLES / "nextflow" / "nextflow.config").read_text()
    params_block = re.search(r"params\s*\{(.*?)\n\}", config, re.S)
    assert params_block
    declared = set(re.findall(r"^\s*(\w+)\s*=", params_block.group(1), re.M))
    used = set(re.findall(r"params\.(\w+)", nf))
    assert used and used <= declared, f"undeclared params: {sorted(used - declared)}"
    for directive in ("maxForks params.max_forks", "errorStrategy 'retry'", "publishDir params.out"):
        assert directive in nf
    assert nf.count("{") == nf.count("}")


# --- Snakemake --------------------------------------------------------------------------------

def test_snakemake_workflow_segments_each_slide(two_slides, tiny_model, tmp_path):
    slides, mask = two_slides
    out = tmp_path / "out"
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "slides": str(slides), "out": str(out), "model": str(tiny_model), "threads": 1, "gpus": 0,
        "retries": 0, "options": " ".join([*FAST, "--mask", str(mask)])}))
    res = subprocess.run(
        [str(BIN / "snakemake"), "-s", str(EXAMPLES / "snakemake" / "Snakefile"), "--configfile", str(config),
         "--cores", "2", "--forceall", "--directory", str(tmp_path / "work")],
        env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    for stem in ("s0", "s1"):
        _assert_complete(out, stem)
        assert read_status(out, stem)["state"] == "done"
        assert (out / "logs" / f"{stem}.log").is_file()
    assert "2 done, 0 failed" in res.stdout + res.stderr  # the summary printed at the end
    code, status = _status(out)
    assert code == 0 and status["done"] == 2


# --- GDC manifest loop ------------------------------------------------------------------------

def test_gdc_manifest_loop_segments_what_was_downloaded(two_slides, tiny_model, tmp_path):
    slides, mask = two_slides
    download = tmp_path / "gdc"
    rows = ["id\tfilename\tmd5\tsize\tstate"]
    cases = {"TCGA-AA-0001-01Z-00-DX1.svs": "ok", "TCGA-AA-0002-01Z-00-DX1.svs": "ok",
             "TCGA-AA-0003-01Z-00-DX1.svs": "missing", "TCGA-AA-0004-01Z-00-DX1.svs": "corrupt",
             "TCGA-AA-0005-01Z-00-DX1.svs": "unreadable"}
    for n, (name, case) in enumerate(cases.items()):
        uuid = f"{n:08d}-1111-2222-3333-444455556666"
        data = b"not a slide" if case == "unreadable" else (slides / "s0.svs").read_bytes()
        if case != "missing":
            (download / uuid).mkdir(parents=True)
            (download / uuid / name).write_bytes(data)
        md5 = hashlib.md5(data).hexdigest() if case != "corrupt" else "0" * 32
        rows.append(f"{uuid}\t{name}\t{md5}\t{len(data)}\treleased")
    manifest = tmp_path / "gdc_manifest.txt"
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    res = subprocess.run(
        ["bash", str(EXAMPLES / "gdc_manifest.sh"), str(manifest), str(download), str(out), "--md5",
         *FAST, "--model", str(tiny_model), "--mask", str(mask), "-q"],
        env=ENV, capture_output=True, text=True, timeout=600)
    # Two slides done, the unreadable one failed (the run goes on); the missing and the
    # corrupt one are named and left pending: exit 1.
    assert res.returncode == 1, res.stderr[-3000:]
    assert "missing: 00000002" in res.stderr and "md5 mismatch" in res.stderr and "0004" in res.stderr
    assert "3 of 5 slides" in res.stderr
    for name, case in cases.items():
        stem = name.removesuffix(".svs")
        if case == "ok":
            _assert_complete(out, stem)
        else:
            assert not list(out.glob(f"{stem}*"))
    code, status = _status(out, "--manifest", str(manifest), "--slides-dir", str(download))
    assert code == 1 and status["done"] == 2 and status["failed"] == 1 and status["pending"] == 2
    bad = subprocess.run(["bash", str(EXAMPLES / "gdc_manifest.sh"), str(slides / "s0.svs"), str(download),
                          str(out)], env=ENV, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"error: {slides / 's0.svs'}: not a GDC manifest (no id and filename columns in its header)"]


# --- Python API -------------------------------------------------------------------------------

def test_python_api_script_counts_nuclei_per_slide_and_class(two_slides, tmp_path):
    slides, mask = two_slides
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, str(EXAMPLES / "python_api.py"), str(slides), str(out), "--device", "cpu",
         "--mask", str(mask), "--tile", "160", "--margin", "48", "--workers", "0"],  # the bundled model
        env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    per_slide, per_class = res.stdout.split("(DuckDB)")
    printed = {tuple(line.split("\t")[:2]): int(line.split("\t")[2])
               for line in per_slide.splitlines() if line.count("\t") == 2}
    total: dict[str, int] = {}
    for stem in ("s0", "s1"):
        nuclei = _assert_complete(out, stem)["counts"]["nuclei"]
        assert nuclei, "the bundled model finds nuclei on the phantom"
        assert {c: n for (s, c), n in printed.items() if s == stem} == nuclei
        for c, n in nuclei.items():
            total[c] = total.get(c, 0) + n
    cohort = {line.split("\t")[0]: int(line.split("\t")[1]) for line in per_class.splitlines() if "\t" in line}
    assert cohort == total
    again = subprocess.run([sys.executable, str(EXAMPLES / "python_api.py"), str(tmp_path / "none"), str(out)],
                           env=ENV, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and again.stderr.strip() == f"error: {tmp_path / 'none'}: not a folder"


# --- container ----------------------------------------------------------------------------------

def test_dockerfile_lints_and_its_context_holds_what_it_copies():
    res = subprocess.run([str(BIN / "hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["cerberus"]' in dockerfile and re.search(r"^USER (?!root|0\b)", dockerfile, re.M)
    assert re.search(r"^ARG BASE=nvidia/cuda:", dockerfile, re.M) and "ARG TORCH_INDEX=" in dockerfile
    kept = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
            if line.startswith("!")}
    copied = set()
    for line in dockerfile.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied |= {src.rstrip("/") for src in line.split()[1:-1]}
    assert copied and copied <= kept, f"copied but outside the build context: {sorted(copied - kept)}"
    assert all((ROOT / src).exists() for src in copied)
