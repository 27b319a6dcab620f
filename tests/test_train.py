"""Training end to end on tiny phantom data: losses fall, masked losses leave absent
decoders alone, resume is bit-for-bit, subtyping freezes all but one decoder, and
the CLI wraps it all with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.core.errors import InputError
from cerberus_cli.model.checkpoint import load_checkpoint
from cerberus_cli.model.network import CerberusNet
from cerberus_cli.training import TrainOptions, train
from cerberus_cli.training.augment import AugmentConfig
from cerberus_cli.training.batches import BatchBuilder, PatchConfig
from cerberus_cli.training.datasets import open_dataset
from cerberus_cli.training.losses import task_losses
from cerberus_cli.training.model_init import build_model, new_config
from cerberus_cli.training.options import DataSpec
from cerberus_cli.training.task_sampler import (
    BatchPlan,
    SamplerConfig,
    SampleSpec,
    TaskSampler,
)
from cerberus_cli.training.trainer import to_device, train_step
from tests._train_fixtures import write_phantom

PATCH = 64


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return write_phantom(tmp_path_factory.mktemp("phantom"), count=4, size=96, tissue_size=80)


def _options(out: Path, phantom: Path, **kw) -> TrainOptions:
    base = dict(output=str(out), data=DataSpec.parse(str(phantom)), arch="light", steps=12, batch_size=4,
                patch=PATCH, tissue_patch=64, workers=0, val_every=1000, log_every=1, val_fraction=0.0,
                progress=False, seed=3)
    base.update(kw)
    return TrainOptions(**base)


def _datasets(phantom: Path) -> dict:
    return {t: open_dataset(t, phantom) for t in ("gland", "lumen", "nuclei", "tissue")}


def _fixed_batch(builder: BatchBuilder, tasks: list[str], step: int = 0, stride: int = 1) -> dict:
    """A batch of ``tasks`` with items 0, stride, 2 * stride, ... of each task's dataset."""
    super_task = "tissue" if tasks[0] == "tissue" else "segmentation"
    samples = tuple(SampleSpec(t, (i * stride) % len(builder.datasets[t]), 100 + i) for i, t in enumerate(tasks))
    return to_device(builder.build(BatchPlan(step, super_task, samples)), torch.device("cpu"))


def test_masked_losses_give_absent_decoders_zero_gradient(phantom):
    model = CerberusNet(new_config("light", ["gland", "lumen", "nuclei", "tissue"], 64)).train()
    sampler = TaskSampler(SamplerConfig(sizes={"gland": 4, "nuclei": 4}))
    builder = BatchBuilder(_datasets(phantom), sampler, PatchConfig(PATCH, 64), AugmentConfig.none(), 1)
    batch = _fixed_batch(builder, ["nuclei", "gland", "nuclei"])
    out = model(batch["images"])  # every head decoded, only two tasks present
    losses = task_losses(out, batch, model.config)
    assert set(losses) == {"nuclei", "nuclei_type", "gland", "gland_type"}
    sum(losses.values()).backward()
    grad = {name: sum(0.0 if p.grad is None else p.grad.abs().sum().item()
                      for p in model.decoders[name].parameters())
            for name in model.seg_heads}
    assert grad["lumen"] == 0.0
    assert all(grad[h] > 0 for h in ("nuclei", "nuclei_type", "gland", "gland_type"))
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.tissue_head.parameters())
    assert sum(p.grad.abs().sum().item() for p in model.encoder.parameters()) > 0
    # A sample's targets reach only its own task's head: changing the nuclei sample's
    # targets leaves the gland losses unchanged.
    batch["inst"][0] = 0
    again = task_losses(out, batch, model.config)
    assert again["gland"].item() == pytest.approx(losses["gland"].item())
    assert again["nuclei"].item() != pytest.approx(losses["nuclei"].item())


def test_dynamic_freezing_leaves_absent_decoders_untouched_by_adam(phantom):
    model = CerberusNet(new_config("light", ["gland", "lumen", "nuclei", "tissue"], 64))
    sampler = TaskSampler(SamplerConfig(sizes={t: 4 for t in ("gland", "lumen", "nuclei")}))
    builder = BatchBuilder(_datasets(phantom), sampler, PatchConfig(PATCH, 64), AugmentConfig.none(), 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    dev = torch.device("cpu")
    # Step 1 gives the lumen decoder Adam moments; step 2 has no lumen sample.
    train_step(model, opt, _fixed_batch(builder, ["lumen", "nuclei"]), dev)
    lumen = [p.detach().clone() for p in model.decoders["lumen"].parameters()]
    encoder = [p.detach().clone() for p in model.encoder.parameters()]
    losses = train_step(model, opt, _fixed_batch(builder, ["gland", "nuclei"], 1), dev)
    assert set(losses) == {"gland", "gland_type", "nuclei", "nuclei_type"}
    assert all(torch.equal(a, b) for a, b in zip(lumen, model.decoders["lumen"].parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(encoder, model.encoder.parameters()))
    # A tissue batch moves the encoder and the tissue head, no decoder.
    gland = [p.detach().clone() for p in model.decoders["gland"].parameters()]
    tissue = [p.detach().clone() for p in model.tissue_head.parameters()]
    train_step(model, opt, _fixed_batch(builder, ["tissue"] * 4, 2), dev)
    assert all(torch.equal(a, b) for a, b in zip(gland, model.decoders["gland"].parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(tissue, model.tissue_head.parameters()))


def test_tissue_batches_can_keep_the_encoder_batch_norm_statistics(phantom):
    builder = BatchBuilder(_datasets(phantom), TaskSampler(SamplerConfig(sizes={"tissue": 4})),
                           PatchConfig(PATCH, 64), AugmentConfig.none(), 1)
    batch = _fixed_batch(builder, ["tissue"] * 4)
    dev = torch.device("cpu")
    for mode in ("update", "keep"):
        model = CerberusNet(new_config("light", ["nuclei", "tissue"], 64))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        train_step(model, opt, batch, dev, tissue_bn=mode)
        after = model.state_dict()
        stats = [k for k in before if k.startswith("encoder.") and "running_" in k]
        weights = [k for k in before if k.startswith("encoder.") and k.endswith("weight")]
        assert stats and weights
        assert any(not torch.equal(before[k], after[k]) for k in weights)
        assert all(torch.equal(before[k], after[k]) for k in stats) == (mode == "keep"), mode
        # The tissue head's own statistics move either way.
        assert not torch.equal(before["tissue_head.bn2.running_mean"], after["tissue_head.bn2.running_mean"])


def test_a_few_dozen_steps_reduce_every_task_loss(phantom, tmp_path):
    opts = _options(tmp_path / "run", phantom, steps=40, checkpoint_every=40, seed=0, tissue_prob=0.4)
    before, _ = build_model("light", "random", ["gland", "lumen", "nuclei", "tissue"], 64, seed=0)
    result = train(opts)
    after = load_checkpoint(result.last_checkpoint).model
    builder = BatchBuilder(_datasets(phantom), TaskSampler(SamplerConfig(sizes={"nuclei": 4})),
                           PatchConfig(PATCH, 64), AugmentConfig.none(), 1)
    probes = [_fixed_batch(builder, [t] * 4, 50) for t in ("gland", "lumen", "nuclei")]
    probes.append(_fixed_batch(builder, ["tissue"] * 9, 50, stride=4))  # one patch per class

    def probe_losses(model: CerberusNet) -> dict[str, float]:
        # Batch statistics in BN (train mode) so that 40 steps of running averages
        # do not blur the comparison; no dropout, no gradient.
        model.train()
        model.tissue_head.dropout.eval()
        out: dict[str, float] = {}
        with torch.no_grad():
            for b in probes:
                res = model(b["images"], tissue="centre")
                out.update({k: v.item() for k, v in task_losses(res, b, model.config).items()})
        return out

    start, end = probe_losses(before), probe_losses(after)
    assert set(start) == {"gland", "gland_type", "lumen", "nuclei", "nuclei_type", "tissue"}
    for head in start:
        assert end[head] < 0.85 * start[head], (head, start[head], end[head])


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model.state_dict()


def test_resume_is_bit_for_bit(phantom, tmp_path):
    # The learning-rate drop is pinned: by default it sits at 80% of --steps, and the
    # interrupted run below was started with fewer steps.
    full = train(_options(tmp_path / "full", phantom, steps=8, checkpoint_every=4, lr_drop_at=6))
    first = train(_options(tmp_path / "part", phantom, steps=4, checkpoint_every=4, lr_drop_at=6))
    assert first.steps == 4
    resumed = train(TrainOptions(output=str(tmp_path / "part"), resume=True, steps=8, workers=1,
                                 log_every=1, progress=False))
    a, b = _state(full.last_checkpoint), _state(resumed.last_checkpoint)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    full_state = torch.load(tmp_path / "full/checkpoints/last.pt", weights_only=True)["training_state"]
    part_state = torch.load(tmp_path / "part/checkpoints/last.pt", weights_only=True)["training_state"]
    assert full_state["step"] == part_state["step"] == 8
    assert torch.equal(full_state["rng"]["torch"], part_state["rng"]["torch"])
    steps = [r["step"] for r in map(json.loads, (tmp_path / "part/metrics.jsonl").read_text().splitlines())
             if r["kind"] == "train"]
    assert steps == list(range(1, 9))
    records = [[r for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
                if r["kind"] != "summary"] for run in ("full", "part")]  # summaries hold timings
    assert records[0] == records[1]


def test_subtype_stage_trains_only_the_type_decoder(phantom, tmp_path):
    base = train(_options(tmp_path / "base", phantom, steps=2, tasks=["nuclei", "tissue"]))
    base_model = load_checkpoint(base.last_checkpoint).model
    assert "nuclei_type" in base_model.seg_heads
    sub = train(_options(tmp_path / "sub", phantom, steps=3, subtype="nuclei", init=str(base.last_checkpoint)))
    a, b = base_model.state_dict(), _state(sub.last_checkpoint)
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed, "the type decoder did not train"
    assert all(k.startswith(("decoders.nuclei_type.", "heads.nuclei_type.")) for k in changed), changed
    # BN statistics of the frozen parts stay as they were, too.
    assert torch.equal(a["encoder.bn1.running_mean"], b["encoder.bn1.running_mean"])
    # The tissue stage trains the tissue head alone on the frozen encoder.
    tis = train(_options(tmp_path / "tis", phantom, steps=3, subtype="tissue", init=str(base.last_checkpoint)))
    c = _state(tis.last_checkpoint)
    changed = {k for k in a if not torch.equal(a[k], c[k])}
    assert changed and all(k.startswith("tissue_head.") for k in changed), changed


def test_frozen_encoder_stage_trains_decoders_and_heads_only(phantom, tmp_path):
    base = train(_options(tmp_path / "base", phantom, steps=2, tasks=["nuclei", "tissue"]))
    a = load_checkpoint(base.last_checkpoint).model.state_dict()
    stage = train(_options(tmp_path / "dec", phantom, steps=6, tasks=["nuclei", "tissue"], tissue_prob=0.5,
                           freeze_encoder=True, init=str(base.last_checkpoint)))
    b = _state(stage.last_checkpoint)
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert not any(k.startswith("encoder.") for k in changed), changed  # weights and BN statistics
    # The bridge feeds every decoder: moving it would change tasks this stage does not train.
    assert not any(k.startswith("bridge.") for k in changed), changed
    assert any(k.startswith("decoders.nuclei.") for k in changed)
    assert any(k.startswith("tissue_head.") for k in changed)


def _bridge_drift(base: CerberusNet, tuned: CerberusNet, images: torch.Tensor) -> float:
    """Relative squared change of the bridge output (what every decoder reads)."""
    base.eval(), tuned.eval()
    with torch.no_grad():
        a = base.bridge(base.encoder(images.float() / 255.0)[-1])
        b = tuned.bridge(tuned.encoder(images.float() / 255.0)[-1])
    return float((a - b).pow(2).mean() / a.pow(2).mean())


def test_tune_deepest_tissue_stage_trains_layer4_and_keeps_the_decoders_input(phantom, tmp_path):
    base = train(_options(tmp_path / "base", phantom, steps=2, tasks=["nuclei", "tissue"]))
    a = _state(base.last_checkpoint)
    runs = {}
    for weight in (1e-4, 1e4):
        runs[weight] = train(_options(tmp_path / f"tune{weight:g}", phantom, steps=10, subtype="tissue",
                                      tune_deepest=True, anchor_weight=weight, tissue_prob=0.5, lr=3e-3,
                                      init=str(base.last_checkpoint)))
    b = _state(runs[1e4].last_checkpoint)
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert any(k.startswith("encoder.layer4.") for k in changed), changed
    assert any(k.startswith("tissue_head.") for k in changed) and "bridge.weight" in changed
    # Nothing else moves: shallower blocks, decoders, heads, nor layer4's BN statistics.
    assert all(k.startswith(("encoder.layer4.", "tissue_head.", "bridge.")) for k in changed), changed
    assert not any(k.startswith("encoder.layer4.") and "running_" in k for k in changed), changed
    records = [json.loads(x) for x in (tmp_path / "tune10000/metrics.jsonl").read_text().splitlines()]
    kinds = {r["super_task"] for r in records if r["kind"] == "train"}
    assert kinds == {"tissue", "segmentation"}
    assert all("loss_anchor" in r for r in records if r.get("super_task") == "segmentation")
    # The anchor does its job: the strongly anchored run moved the bridge output far
    # less than the barely anchored one.
    builder = BatchBuilder(_datasets(phantom), TaskSampler(SamplerConfig(sizes={"nuclei": 4})),
                           PatchConfig(PATCH, 64), AugmentConfig.none(), 1)
    images = _fixed_batch(builder, ["nuclei", "gland", "lumen", "nuclei"], 7)["images"]
    start = load_checkpoint(base.last_checkpoint).model
    loose = _bridge_drift(start, load_checkpoint(runs[1e-4].last_checkpoint).model, images)
    tight = _bridge_drift(start, load_checkpoint(runs[1e4].last_checkpoint).model, images)
    assert tight < 0.5 * loose, (tight, loose)


def test_tune_deepest_resume_anchors_to_the_init_model(phantom, tmp_path):
    base = train(_options(tmp_path / "base", phantom, steps=2, tasks=["nuclei", "tissue"]))
    kw = dict(subtype="tissue", tune_deepest=True, tissue_prob=0.5, init=str(base.last_checkpoint),
              checkpoint_every=3, lr_drop_at=5)
    full = train(_options(tmp_path / "full", phantom, steps=6, **kw))
    train(_options(tmp_path / "part", phantom, steps=3, **kw))
    resumed = train(TrainOptions(output=str(tmp_path / "part"), resume=True, steps=6, workers=0,
                                 log_every=1, progress=False))
    a, b = _state(full.last_checkpoint), _state(resumed.last_checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_tune_deepest_stage(phantom, tmp_path):
    base = train(_options(tmp_path / "base", phantom, steps=1, tasks=["gland", "tissue"]))
    out = tmp_path / "tune"
    res = CliRunner().invoke(main, [
        "train", "-o", str(out), "--subtype", "tissue", "--tune-deepest", "--anchor-weight", "5",
        "--init", str(base.last_checkpoint), "--data", f"tissue={phantom}", "--data", f"nuclei={phantom}",
        "--steps", "6", "--batch-size", "2", "--tissue-batch-size", "4", "--patch", "64", "--tissue-patch", "64",
        "--tissue-prob", "0.5", "--workers", "0", "--val-every", "6", "--val-limit", "2",
        "--val-fraction", "0.25", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "throughput segmentation" in res.output and "throughput tissue" in res.output
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["tune_deepest"] and config["options"]["anchor_weight"] == 5.0
    assert config["tasks"] == ["tissue", "nuclei"]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_anchor" in r for r in records) and any("loss_tissue" in r for r in records)
    val = [r for r in records if r["kind"] == "val"]
    assert val and "tissue_acc" in val[0]  # nuclei has no head in the base model: not validated
    prov = load_checkpoint(out / "checkpoints/last.pt").provenance["training"]
    assert prov["options"]["tune_deepest"] and prov["init"]["init_sha256"]

def test_subtype_adds_a_missing_type_head(phantom, tmp_path):
    base = train(_options(tmp_path / "base", phantom, steps=1, tasks=["gland"]))
    light = load_checkpoint(base.last_checkpoint)
    # Drop gland_type from the saved model to simulate a model without it.
    from cerberus_cli.model.checkpoint import save_checkpoint

    cfg = light.config.with_heads(["gland"])
    slim = CerberusNet(cfg)
    slim.load_state_dict({k: v for k, v in light.model.state_dict().items() if k in slim.state_dict()})
    save_checkpoint(slim, tmp_path / "slim.pt")
    sub = train(_options(tmp_path / "sub", phantom, steps=2, subtype="gland", init=str(tmp_path / "slim.pt")))
    loaded = load_checkpoint(sub.last_checkpoint)
    assert [h.name for h in loaded.config.heads] == ["gland", "gland_type"]


def test_imagenet_init_from_torchvision_state_dict(phantom, tmp_path):
    from cerberus_cli.model.resnet import ResNetEncoder

    enc = ResNetEncoder("resnet18", with_fc=True)
    torch.save(enc.state_dict(), tmp_path / "resnet18.pth")
    model, prov = build_model("light", "imagenet", ["nuclei"], 64, str(tmp_path / "resnet18.pth"))
    assert prov["init"] == "imagenet"
    assert torch.equal(model.encoder.layer4[1].conv2.weight, enc.layer4[1].conv2.weight)
    torch.save(ResNetEncoder("resnet34").state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(InputError, match="resnet34.pth: not a torchvision resnet18 state dict"):
        build_model("light", "imagenet", ["nuclei"], 64, str(tmp_path / "resnet34.pth"))


def test_cli_train_end_to_end(phantom, tmp_path):
    out = tmp_path / "run"
    args = ["train", "-o", str(out), "--data", f"nuclei={phantom}", "--data", f"tissue={phantom}",
            "--data", f"gland:generic={phantom / 'gland'}", "--arch", "light", "--steps", "6",
            "--batch-size", "2", "--tissue-batch-size", "3", "--patch", "64", "--tissue-patch", "64",
            "--workers", "1", "--val-every", "3", "--val-limit", "2", "--val-fraction", "0.25", "--sampler", "fixed",
            "--no-progress", "--task-probs", "nuclei=1,gland=1", "--blur-augment", "0.5"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "best checkpoint" in res.output and "throughput" in res.output
    for f in ("config.json", "metrics.jsonl", "metrics.csv", "plot.png", "checkpoints/last.pt",
              "checkpoints/best.pt"):
        assert (out / f).is_file(), f
    # One checkpoint file holds the training state; no temporary file is left.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in val] == [3, 6]
    assert {"nuclei_dice", "gland_dice", "tissue_acc"} <= set(val[0])
    assert load_checkpoint(out / "checkpoints/best.pt").provenance["training"]["step"] in (3, 6)
    options = json.loads((out / "config.json").read_text())["options"]
    assert options["tissue_batch_size"] == 3 and options["blur_augment"] == 0.5
    # Same directory again: refused without --resume/--overwrite.
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "run directory exists" in again.output


@pytest.mark.parametrize("args, message", [
    (["--data", "cells=/x"], "unknown task 'cells'"),
    (["--data", "nuclei=/does/not/exist"], "no such file or directory"),
    (["--data", "nuclei:nope={ph}"], "unknown dataset format 'nope'"),
    (["--data", "{ph}", "--init", "imagenet"], "needs --imagenet-weights"),
    (["--data", "{ph}", "--patch", "70"], "--patch must be a multiple of 16"),
    (["--data", "{ph}", "--tissue-batch-size", "0"], "--tissue-batch-size must be at least 1"),
    (["--data", "{ph}", "--subtype", "nuclei"], "--subtype needs --init MODEL"),
    (["--data", "{ph}", "--freeze-encoder"], "--freeze-encoder needs --init MODEL"),
    (["--data", "{ph}", "--tune-deepest"], "--tune-deepest goes with --subtype tissue"),
    (["--data", "tissue={ph}", "--subtype", "tissue", "--tune-deepest", "--init", "default"],
     "--tune-deepest needs segmentation patches"),
    (["--data", "{ph}", "--subtype", "tissue", "--tune-deepest", "--anchor-weight", "0"],
     "--anchor-weight must be positive"),
    (["--data", "{ph}", "--task-probs", "nuclei"], "expected NAME=NUMBER"),
    (["--data", "{ph}", "--stain-augment", "1.5"], "--stain-augment must be in [0, 1)"),
    (["--data", "{ph}", "--blur-augment", "-0.1"], "--blur-augment must be in [0, 1]"),
    (["--resume"], "nothing to resume"),
])
def test_cli_bad_input_is_one_line(phantom, tmp_path, args, message):
    args = [a.replace("{ph}", str(phantom)) for a in args]
    res = CliRunner().invoke(main, ["train", "-o", str(tmp_path / "r"), "--steps", "1", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
