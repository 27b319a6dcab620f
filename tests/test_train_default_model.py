"""The bundled default model: small, the light configuration with all six heads,
and carrying the held-out phantom metrics its model card reports."""

from __future__ import annotations

import json
from pathlib import Path

from cerberus_cli.model.registry import load_model, resolve_model

MODELS = Path(__file__).resolve().parent.parent / "models"


def test_default_model_is_small_light_and_documented():
    path = resolve_model("default")
    assert path.stat().st_size <= 30 * 2**20
    loaded = load_model("default")
    cfg = loaded.config
    assert (cfg.encoder, cfg.stem_stride) == ("resnet18", 2)
    assert [h.name for h in cfg.heads] == ["gland", "gland_type", "lumen", "nuclei", "nuclei_type", "tissue"]
    recorded = json.loads((MODELS / "training" / "metrics.json").read_text())
    assert loaded.provenance["held_out_phantom_metrics"] == recorded["held_out_phantom"]
    assert recorded["sha256"] == loaded.sha256
    card = (MODELS / "default.md").read_text().lower()
    for key in ("nuclei_pq", "gland_pq", "lumen_pq", "nuclei_type_acc", "tissue_acc"):
        assert f"{recorded['held_out_phantom'][key]:.3f}" in card, key
    assert "cerberus train" in card and "not for diagnosis" in card
