"""``cerberus finetune`` and batch-norm adaptation, on tiny signet phantoms."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.model.bn_adapt import adapt_batchnorm, reestimate_batchnorm, target_statistics
from cerberus_cli.model.resnet import ResNetEncoder
from cerberus_cli.training.rundir import RunDir


def run(*args: object) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def signet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cerberus_cli.synthetic.signet import write_signet_dataset

    return write_signet_dataset(tmp_path_factory.mktemp("ft") / "signet", count=32, seed=4, size=32)


def test_finetune_full_with_bn_adaptation_reports_test_metrics(signet, tmp_path, tiny_model):
    out = tmp_path / "ft"
    code, text = run("finetune", signet, "-o", out, "--model", tiny_model, "--mode", "full",
                     "--head", "cerberus", "--bn-adapt", 2, "--epochs", 3, "--lr-grid", "0.001,0.0001",
                     "--batch-size", 8, "--patch-px", 32, "--bootstrap", 50, "--device", "cpu")
    assert code == 0, text
    report = json.loads((out / "report.json").read_text())
    assert report["n_test"] > 0 and 0.0 <= report["accuracy"] <= 1.0
    assert len(report["accuracy_ci"]) == 2
    with open(out / "epochs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6  # 2 learning rates x 3 epochs
    assert report["chosen"][0]["lr"] in (0.001, 0.0001)
    # The written model is an encoder the transfer commands read.
    code, text = run("features", signet, "--model", out / "model.pt", "-o", tmp_path / "f.parquet",
                     "--patch-px", 32, "--workers", 0, "--layers", "layer4")
    assert code == 0, text


def test_finetune_frozen_lowers_the_training_loss(signet, tmp_path, tiny_model):
    out = tmp_path / "fz"
    code, text = run("finetune", signet, "-o", out, "--model", tiny_model, "--epochs", 6,
                     "--lr-grid", "0.01", "--patch-px", 32, "--bootstrap", 0, "--device", "cpu")
    assert code == 0, text
    with open(out / "epochs.csv") as f:
        losses = [float(r["train_loss"]) for r in csv.DictReader(f)]
    assert losses[-1] < losses[0]


def test_bn_adaptation_keeps_eval_outputs_and_sets_target_statistics():
    torch.manual_seed(0)
    enc = ResNetEncoder("resnet18", 2)
    # Source statistics that are not the identity, as after training.
    enc.train()
    with torch.no_grad():
        for _ in range(3):
            enc(torch.rand(8, 3, 32, 32) * 0.5)
    enc.eval()
    target = [torch.rand(6, 3, 32, 32) + 0.3 for _ in range(2)]
    before = enc(target[0])[-1].clone()
    expected = target_statistics(enc, enc, target)
    adapt_batchnorm(enc, enc, target)
    after = enc(target[0])[-1]
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)
    for bn, (mean, var) in expected.items():
        assert torch.allclose(bn.running_mean, mean.float(), atol=1e-5)
        assert torch.allclose(bn.running_var, var.float(), atol=1e-5, rtol=1e-4)
    # Running statistics of a first BN are those of the target batch itself.
    x = torch.cat(target)
    conv = enc.conv1(x).transpose(0, 1).reshape(64, -1)
    assert torch.allclose(enc.bn1.running_mean, conv.mean(1), atol=1e-4)
    assert torch.allclose(enc.bn1.running_var, conv.var(1), atol=1e-4, rtol=1e-3)


def test_bn_reestimation_takes_target_statistics_and_keeps_affine():
    torch.manual_seed(0)
    enc = ResNetEncoder("resnet18", 2)
    enc.eval()
    weight = enc.bn1.weight.clone()
    target = [torch.rand(6, 3, 32, 32) * 0.4 + 0.5 for _ in range(2)]
    before = enc(target[0])[-1].clone()
    assert reestimate_batchnorm(enc, enc, target) > 0
    assert not enc.training and enc.bn1.momentum == 0.1
    assert torch.equal(enc.bn1.weight, weight)
    conv = enc.conv1(torch.cat(target)).transpose(0, 1).reshape(64, -1)
    assert torch.allclose(enc.bn1.running_mean, conv.mean(1), atol=1e-4)
    assert torch.allclose(enc.bn1.running_var, conv.var(1), atol=1e-4, rtol=1e-3)
    # Deeper layers see inputs normalised by the adapted layers before them.
    assert not torch.allclose(before, enc(target[0])[-1], atol=1e-3)


@pytest.mark.parametrize("case, message", [
    ("one_class", "one class"), ("no_val", "no 'val' rows"), ("unseen", "label sets differ"),
    ("bad_model", "encoder"),
])
def test_bad_input_is_one_line_and_leaves_nothing(signet, tmp_path, tiny_model, case, message):
    import pandas as pd

    table = pd.read_csv(signet)
    table["path"] = [str(signet.parent / p) for p in table["path"]]
    model = tiny_model
    if case == "one_class":
        table["label"] = "other"
    elif case == "no_val":
        table = table[table["split"] != "val"]
    elif case == "unseen":
        table.loc[table["split"] == "test", "label"] = "goblet"
    else:
        model = tmp_path / "bad.pt"
        torch.save({"conv1.weight": torch.zeros(3)}, model)
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    out = tmp_path / "out"
    code, text = run("finetune", path, "-o", out, "--model", model, "--patch-px", 32, "--epochs", 1)
    assert code == 2, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], text
    assert not out.exists() and not list(tmp_path.glob("out*"))


def test_head_standardises_badly_scaled_features_and_learns_them():
    from cerberus_cli.transfer.finetune_heads import fit_standardisation, make_head

    # Pooled features of a trained encoder: large offsets, tiny and uneven spreads.
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 2
    x = torch.randn(64, 512, generator=gen) * 0.02 + 3.0
    x[:, 7] += 0.05 * (2 * y - 1)
    x[:, 3] = 3.0 + torch.randn(64, generator=gen) * 1e-6  # a near-constant (dead) channel
    head = make_head("linear", 2)
    fit_standardisation(head, x)
    live = torch.arange(512) != 3
    assert torch.allclose(head[0].mean, x.mean(0)) and torch.allclose(head[0].std[live], x.std(0)[live])
    # A near-constant feature is not amplified without bound (full fine-tuning moves it).
    assert head[0].std[3] >= 0.1 * x.std(0).mean() - 1e-9
    z = head[0](x)
    assert torch.allclose(z.mean(0), torch.zeros(512), atol=1e-4)
    opt = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9)
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float((head(x).argmax(1) == y).float().mean()) == 1.0
    # The statistics are buffers of the head: they are saved with it.
    assert {"0.mean", "0.std"} <= set(head.state_dict())


def test_full_finetune_keeps_batchnorm_statistics_unless_asked(signet, tmp_path, tiny_model):
    from cerberus_cli.model.checkpoint import load_checkpoint

    before = load_checkpoint(tiny_model).model.encoder.bn1.running_mean.clone()
    for flags, same in (((), True), (("--bn-train",), False)):
        out = tmp_path / f"bn{len(flags)}"
        code, text = run("finetune", signet, "-o", out, "--model", tiny_model, "--mode", "full",
                         "--epochs", 1, "--warmup-epochs", 0, "--lr-grid", "0.001", "--batch-size", 8,
                         "--patch-px", 32, "--bootstrap", 0, "--device", "cpu", *flags)
        assert code == 0, text
        after = load_checkpoint(out / "model.pt").model.encoder.bn1.running_mean
        assert torch.equal(before, after) is same
        weights = torch.load(out / "model.pt", weights_only=True)["classifier"]["state_dict"]
        assert weights["0.std"].min() > 0


def test_class_weights_equalise_the_classes_of_an_imbalanced_loss():
    import numpy as np

    from cerberus_cli.transfer.finetune import class_weights

    labels = np.array([0, 0, 0, 0, 0, 0, 2, 2])
    w = class_weights(labels, 3)
    counts = np.bincount(labels, minlength=3)
    assert w[1] == 0.0
    assert torch.allclose(w[0] * counts[0], w[2] * counts[2])
    assert float(w[[0, 2]].mean()) == pytest.approx(1.0)


def test_full_mode_warms_up_the_head_before_the_encoder_trains_at_a_lower_rate(signet, tiny_model, tmp_path):
    """The bundled encoder fell below chance when a random head's gradients reached it
    from the first step at the head's rate: full mode must keep the encoder fixed while
    the head warms up, then train it at a fraction of the head's learning rate."""
    from cerberus_cli.transfer.finetune import _train_one, load_finetune_task, make_optimizer
    from cerberus_cli.transfer.finetune_heads import FinetuneNet
    from cerberus_cli.transfer.pretrain import checked_encoder
    from cerberus_cli.transfer.tuning_options import FinetuneOptions

    defaults = FinetuneOptions()
    assert defaults.warmup_epochs >= 1 and defaults.encoder_lr_mult < 1 and defaults.balanced_loss
    options = FinetuneOptions(model=str(tiny_model), mode="full", epochs=2, warmup_epochs=2,
                              batch_size=8, patch_px=32, augment=False, device="cpu")
    encoder = checked_encoder(options.model)
    task = load_finetune_task(str(signet), options, encoder)
    before = {k: v.clone() for k, v in encoder.trunk.state_dict().items()}
    torch.manual_seed(0)  # the head's initial weights, as _train_one draws them for seed 0
    initial = FinetuneNet(encoder.trunk, "linear", len(task.classes), encoder.normalisation).head[1].weight.clone()
    rows: list[dict] = []
    net, *_ = _train_one(encoder, task, options, 0, 0.05, torch.device("cpu"), None, rows.append,
                         RunDir(tmp_path / "run"))
    assert len(rows) == 2
    for k, v in net.encoder.state_dict().items():  # warm-up epochs only: the encoder as loaded
        assert torch.equal(v, before[k]), k
    assert not torch.equal(net.head[1].weight, initial)  # while the head trained
    opt = make_optimizer(net, FinetuneOptions(mode="full", encoder_lr_mult=0.1), 0.01)
    head_group, enc_group = opt.param_groups
    assert head_group["lr"] == pytest.approx(0.01) and enc_group["lr"] == pytest.approx(0.001)
    assert {id(p) for p in enc_group["params"]} == {id(p) for p in net.encoder.parameters()}
    assert len(make_optimizer(net, FinetuneOptions(mode="frozen"), 0.01).param_groups) == 1


class _Stop(Exception):
    """Stands for a kill: raised from the progress callback, before that epoch's checkpoint."""


def test_resume_is_bit_exact(signet, tmp_path, tiny_model):
    """A fine-tuning stopped in its second learning rate (the epoch it stopped in logged
    but not checkpointed) and resumed ends as an uninterrupted one: same epochs.csv, report
    and weights; its runs folder is gone once the output is complete."""
    from cerberus_cli.transfer.finetune import finetune
    from cerberus_cli.transfer.tuning_options import FinetuneOptions

    args = ["--model", tiny_model, "--mode", "full", "--head", "cerberus", "--bn-adapt", 2, "--epochs", 3,
            "--warmup-epochs", 1, "--lr-grid", "0.001,0.0001", "--batch-size", 8, "--patch-px", 32,
            "--bootstrap", 20, "--device", "cpu"]
    code, text = run("finetune", signet, "-o", tmp_path / "a", *args)
    assert code == 0, text

    def stop_at_fifth(done: int, total: int, row: dict) -> None:
        if done == 5:
            raise _Stop

    options = FinetuneOptions(model=str(tiny_model), mode="full", head="cerberus", bn_adapt=2, epochs=3,
                              warmup_epochs=1, lr_grid=(0.001, 0.0001), batch_size=8, patch_px=32,
                              bootstrap=20, device="cpu")
    with pytest.raises(_Stop):
        finetune(str(signet), tmp_path / "b", options, progress=stop_at_fifth)
    runs = tmp_path / "b.runs"
    assert not (tmp_path / "b").exists() and (runs / "seed0-lr1/checkpoints/last.pt").is_file()
    code, text = run("finetune", signet, "-o", tmp_path / "b", *args)
    assert code != 0 and "--resume" in text and "Traceback" not in text, text
    code, text = run("finetune", signet, "-o", tmp_path / "b", *args, "--resume")
    assert code == 0, text
    assert not runs.exists()
    assert (tmp_path / "a/epochs.csv").read_bytes() == (tmp_path / "b/epochs.csv").read_bytes()
    a, b = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("a", "b"))
    for report in (a, b):
        report.pop("train_samples_per_s")
    assert b["options"].pop("resume") and not a["options"].pop("resume")
    assert a == b
    ma, mb = (torch.load(tmp_path / d / "model.pt", weights_only=True) for d in ("a", "b"))
    for key in ma["state_dict"]:
        assert torch.equal(ma["state_dict"][key], mb["state_dict"][key]), key
    for key in ma["classifier"]["state_dict"]:
        assert torch.equal(ma["classifier"]["state_dict"][key], mb["classifier"]["state_dict"][key]), key
    code, text = run("finetune", signet, "-o", tmp_path / "c", *args, "--resume")
    assert code != 0 and "nothing to resume" in text, text
