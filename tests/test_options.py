"""Options are defined once: the CLI agrees with the option dataclasses; the segment seam,
the in-memory API, verbosity, --json and the exit-code table, end to end."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import uuid

import geopandas as gpd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cerberus_cli.cli import COMMANDS, main
from cerberus_cli.cli.optgen import flag_name, option_fields
from cerberus_cli.core.errors import InputError
from cerberus_cli.core.optionspec import spec_of
from cerberus_cli.inference.describe import InfoOptions
from cerberus_cli.inference.options import SegmentOptions
from cerberus_cli.metrics.options import EvaluateOptions
from cerberus_cli.postprocess.options import PostprocessOptions
from cerberus_cli.synthetic.options import SynthSlideOptions, SynthTilesOptions
from cerberus_cli.training.options import TrainOptions
from cerberus_cli.transfer.patch_tasks import PatchesOptions

FAST = ["--tile", "208", "--workers", "0", "--post-workers", "0", "--batch-size", "2",
        "--no-overlay"]

COMMAND_OPTIONS = [
    (["segment"], SegmentOptions),
    (["info"], InfoOptions),
    (["train"], TrainOptions),
    (["evaluate"], EvaluateOptions),
    (["synth", "tiles"], SynthTilesOptions),
    (["synth", "slide"], SynthSlideOptions),
    (["patches"], PatchesOptions),
]


def _command(path: list[str]):
    import click

    ctx = click.Context(main)
    cmd = main.get_command(ctx, path[0])
    for name in path[1:]:
        cmd = cmd.get_command(ctx, name)
    return cmd


@pytest.mark.parametrize(("path", "cls"), COMMAND_OPTIONS, ids=lambda v: getattr(v, "__name__", None))
def test_cli_options_match_the_dataclass(path, cls):
    cmd = _command(path)
    params = {p.name: p for p in cmd.params}
    defaults = cls() if cls is not TrainOptions else TrainOptions(output="x")
    for field, spec, _ in option_fields(cls):
        assert spec.help, f"{cls.__name__}.{field.name} has no help text"
        param = params[field.name]
        assert flag_name(field, spec) in param.opts
        if spec.parse is None and not spec.multiple:
            assert param.default == _default_of(defaults, field.name), field.name
        if spec.choices:
            assert list(param.type.choices) == list(spec.choices)


def _default_of(obj, name: str):
    """A field's default, looked up through nested option objects."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name == name:
            return value
        if dataclasses.is_dataclass(value):
            try:
                return _default_of(value, name)
            except KeyError:
                continue
    raise KeyError(name)


def test_every_command_has_verbosity_after_the_subcommand():
    for name in COMMANDS:
        cmd = main.get_command(None, name)  # type: ignore[arg-type]
        assert {"verbose", "quiet"} <= {p.name for p in cmd.params}, name


@pytest.mark.parametrize("args", [
    ["--tile", "0"], ["--mpp", "0"], ["--mpp", "nan"], ["--mpp", "1e9"],
    ["--nuclei-threshold", "1.5"], ["--gland-downsample", "3"], ["--gzip"],
    ["--tile", "8000", "--margin", "200"],
])
def test_bad_options_are_one_line_errors(tmp_path, args):
    res = CliRunner().invoke(main, ["segment", "x.svs", "-o", str(tmp_path / "o"), *args])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(("error: --", "Error: Invalid value")), res.stderr
    assert not (tmp_path / "o").exists()


def test_options_validate_in_python():
    with pytest.raises(InputError, match="--batch-size must be positive"):
        SegmentOptions(batch_size=0)
    with pytest.raises(InputError, match="--precision must be one of"):
        SegmentOptions(precision="fp8")
    assert all(spec_of(f) for f in dataclasses.fields(PostprocessOptions))


@pytest.fixture(scope="module")
def segmented(phantom_slide, tmp_path_factory):
    out = tmp_path_factory.mktemp("seg")
    res = CliRunner().invoke(main, ["segment", str(phantom_slide), "-o", str(out), *FAST,
                                    "--tissue-polygons", "--nuclei-threshold", "0.6",
                                    "--json", "-q"])
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def test_json_summary_and_recorded_postprocessing(segmented):
    out, summary = segmented
    assert summary["done"] == 1 and summary["failed"] == 0
    assert summary["slides"][0]["objects"] > 0
    record = json.loads((out / "phantom.run.json").read_text())
    assert record["options"]["post"]["nuclei_threshold"] == 0.6
    meta = json.loads(pq.read_schema(out / "phantom.parquet").metadata[b"cerberus"])
    assert meta["options"]["post"]["nuclei_threshold"] == 0.6
    assert meta["slide"]["key"] == "phantom"


def test_tissue_region_ids_carry_the_slide_key(segmented, phantom_slide, tmp_path):
    out, _ = segmented
    other = tmp_path / "other.svs"
    other.write_bytes(phantom_slide.read_bytes())
    res = CliRunner().invoke(main, ["-q", "segment", str(other), "-o", str(tmp_path / "o2"), *FAST,
                                    "--tissue-polygons"])
    assert res.exit_code == 0, res.output
    a = gpd.read_parquet(out / "phantom.tissue.parquet")
    b = gpd.read_parquet(tmp_path / "o2" / "other.tissue.parquet")
    assert len(a) == len(b) > 0
    assert not set(a.uuid) & set(b.uuid)  # same pixels, different slides: different ids
    assert all(uuid.UUID(u).version == 5 for u in a.uuid)
    assert ((a.probability > 0) & (a.probability <= 1)).all() and a.probability.nunique() > 1


def test_in_memory_segmentation_equals_the_files(segmented, phantom_slide):
    from cerberus_cli import SegmentOptions as Options
    from cerberus_cli import segment_region
    from cerberus_cli.slides import open_slide

    out, _ = segmented
    with open_slide(phantom_slide) as slide:
        width, height = slide.dimensions
    opts = Options(tile=208, workers=0, post_workers=0, batch_size=2, overlay=False,
                   post=PostprocessOptions(nuclei_threshold=0.6))
    result = segment_region(phantom_slide, (0, 0, width, height), opts)
    files = gpd.read_parquet(out / "phantom.parquet")
    assert isinstance(result.objects, gpd.GeoDataFrame)
    # The region is segmented whole, the file run only where tissue was detected: the
    # objects agree except near the edge of the detected tissue.
    key = ["task", "class_name", "centroid_x", "centroid_y", "area_um2"]
    mem = {tuple(round(v, 3) if isinstance(v, float) else v for v in row)
           for row in result.objects[key].itertuples(index=False)}
    disk = {tuple(round(v, 3) if isinstance(v, float) else v for v in row)
            for row in files[key].itertuples(index=False)}
    assert len(mem & disk) >= 0.95 * max(len(mem), len(disk)), (len(mem & disk), len(mem), len(disk))
    assert result.tissue is not None and result.tissue.ndim == 2


def test_segment_refuses_a_bare_string(tmp_path):
    from cerberus_cli import segment

    with pytest.raises(InputError, match="list of slide paths"):
        segment("slide.svs", tmp_path)


def test_exit_codes_and_quiet(phantom_slide, tmp_path):
    missing = tmp_path / "missing.svs"
    cmd = [sys.executable, "-m", "cerberus_cli"]
    proc = subprocess.run([*cmd, "segment", str(missing), "-o", str(tmp_path / "o"), "-q"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count(str(missing)) == 1 and proc.stdout == ""
    proc = subprocess.run([*cmd, "segment", str(phantom_slide), "-o", str(tmp_path / "o"),
                           "--batch-size", "-1"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --batch-size must be positive, got -1"
    proc = subprocess.run([*cmd, "info", str(phantom_slide), "--json", "-v"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and json.loads(proc.stdout)[0]["width"] == 640
