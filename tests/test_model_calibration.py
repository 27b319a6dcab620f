"""A model's post-processing calibration: stored in its config, applied by segment (and by
validation) for every setting the user leaves at its default, shown by `cerberus model`."""

from __future__ import annotations

from dataclasses import replace

import geopandas as gpd
import pytest
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.model.checkpoint import load_checkpoint, save_checkpoint
from cerberus_cli.model.config import ModelConfig, light_config
from cerberus_cli.model.registry import available_models
from cerberus_cli.postprocess.options import PostprocessOptions

#: Glands of at least a gigapixel: a calibration that removes every gland.
NO_GLANDS = (("gland_min_size_px", 10**9), ("gland_threshold", 0.5))


def test_calibration_replaces_only_settings_left_at_their_default():
    got = PostprocessOptions().for_model(NO_GLANDS)
    assert got.gland_min_size_px == 10**9 and isinstance(got.gland_min_size_px, int)
    assert got.gland_threshold == 0.5 and got.nuclei_threshold == PostprocessOptions().nuclei_threshold
    mine = PostprocessOptions(gland_threshold=0.7).for_model(NO_GLANDS)
    assert mine.gland_threshold == 0.7 and mine.gland_min_size_px == 10**9
    off = PostprocessOptions(model_calibration=False)
    assert off.for_model(NO_GLANDS) == off
    assert PostprocessOptions().for_model(()) == PostprocessOptions()


@pytest.mark.parametrize("calibration, message", [
    ((("gland_size", 3),), "'gland_size', which is not a post-processing setting"),
    ((("gland_min_size_px", 2.5),), "gland_min_size_px must be a whole number"),
])
def test_a_bad_calibration_is_refused_by_name(calibration, message):
    with pytest.raises(ValueError, match=message):
        PostprocessOptions().for_model(calibration)


def test_config_round_trip_keeps_a_calibration_and_leaves_none_out():
    plain = light_config()
    assert "postprocess" not in plain.to_dict()
    calibrated = replace(plain, postprocess=NO_GLANDS)
    d = calibrated.to_dict()
    assert d["postprocess"] == {"gland_min_size_px": 10**9, "gland_threshold": 0.5}
    assert ModelConfig.from_dict(d) == calibrated and ModelConfig.from_dict(plain.to_dict()) == plain


@pytest.fixture(scope="module")
def calibrated_phantom(tmp_path_factory):
    loaded = load_checkpoint(available_models()["phantom"])
    loaded.model.config = replace(loaded.model.config, postprocess=NO_GLANDS)
    return save_checkpoint(loaded.model, tmp_path_factory.mktemp("cal") / "calibrated.pt",
                           loaded.provenance)


def _glands(phantom_slide, model, out, *extra):
    res = CliRunner().invoke(main, ["segment", str(phantom_slide), "-o", str(out), "--model", str(model),
                                    "--workers", "0", "--post-workers", "0", "--no-overlay", *extra],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    objects = gpd.read_parquet(out / f"{phantom_slide.stem}.parquet")
    return int((objects.task == "gland").sum())


def test_segment_applies_the_calibration_unless_told_otherwise(phantom_slide, calibrated_phantom, tmp_path):
    assert _glands(phantom_slide, calibrated_phantom, tmp_path / "calibrated") == 0
    reference = _glands(phantom_slide, calibrated_phantom, tmp_path / "off", "--no-model-calibration")
    assert reference > 0
    assert _glands(phantom_slide, calibrated_phantom, tmp_path / "mine", "--gland-min-size-px", "401") > 0
    res = CliRunner().invoke(main, ["model", str(calibrated_phantom)], catch_exceptions=False)
    assert "post-processing calibration: gland_min_size_px=1000000000, gland_threshold=0.5" in \
        " ".join(res.output.split())


def test_training_from_a_calibrated_model_starts_without_its_calibration(calibrated_phantom):
    from cerberus_cli.training.model_init import model_from_checkpoint

    model, _ = model_from_checkpoint(str(calibrated_phantom), [])
    assert model.config.postprocess == ()
