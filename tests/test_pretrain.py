"""``cerberus pretrain``: multi-task pre-training on tiny phantom tasks, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.model.resnet import ResNetEncoder
from cerberus_cli.transfer.multitask import MultiTaskNet, multitask_loss, rescale_head_grads

FAST = ["--patch-px", "32", "--batch-size", "8", "--arch", "resnet18", "--val-every", "4",
        "--save-every", "4", "--device", "cpu"]


def run(*args: object) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tasks on 24 signet phantoms: signet yes/no and the 4-way kind of the centre."""
    from cerberus_cli.synthetic.signet import write_signet_dataset

    root = tmp_path_factory.mktemp("pretrain")
    signet = write_signet_dataset(root / "signet", count=24, seed=3, size=32)
    kind = pd.read_csv(signet)
    kind["label"] = kind["kind"]
    kind["path"] = [str(signet.parent / p) for p in kind["path"]]
    kind_csv = root / "kind.csv"
    kind.to_csv(kind_csv, index=False)
    return signet, kind_csv


def test_pretrain_lowers_every_task_loss_and_writes_a_usable_encoder(tasks, tmp_path):
    signet, kind = tasks
    out = tmp_path / "run"
    code, text = run("pretrain", "-o", out, "--data", f"sig={signet}", "--data", f"kind={kind}",
                     "--steps", 24, "--warmup", 0, "--lr", 0.0003, "--head-lr-mult", 1,
                     "--log-every", 8, *FAST)
    assert code == 0, text
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    for task in ("sig", "kind"):
        assert train[-1][f"loss/{task}"] < train[0][f"loss/{task}"], (task, train)
    assert (out / "checkpoints" / "best.pt").is_file() and (out / "plot.png").is_file()
    feats = tmp_path / "f.parquet"
    code, text = run("features", signet, "--model", out / "checkpoints" / "last.pt", "-o", feats,
                     "--patch-px", 32, "--workers", 0, "--layers", "layer4")
    assert code == 0, text
    assert len(pd.read_parquet(feats)) == 24


def test_resume_is_bit_exact(tasks, tmp_path):
    signet, kind = tasks
    # Logged every 4 steps, so the run stopped at step 4 logs what the uninterrupted one does.
    data = ["--data", f"sig={signet}", "--data", f"kind={kind}", "--log-every", 4]
    assert run("pretrain", "-o", tmp_path / "a", *data, "--steps", 8, "--warmup", 2, *FAST)[0] == 0
    assert run("pretrain", "-o", tmp_path / "b", *data, "--steps", 4, "--warmup", 2, *FAST)[0] == 0
    code, text = run("pretrain", "-o", tmp_path / "b", *data, "--steps", 8, "--warmup", 2,
                     "--resume", *FAST)
    assert code == 0, text
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    for key in ("state_dict", "pretrain_heads"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    assert torch.equal(a["training_state"]["rng"]["torch"], b["training_state"]["rng"]["torch"])
    for name in ("metrics.jsonl", "metrics.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_warmup_leaves_the_encoder_unchanged(tasks, tmp_path):
    signet, kind = tasks
    out = tmp_path / "w"
    code, text = run("pretrain", "-o", out, "--data", f"sig={signet}", "--steps", 4,
                     "--warmup", 4, "--init", "random", "--seed", 5, *FAST)
    assert code == 0, text
    torch.manual_seed(5)
    fresh = ResNetEncoder("resnet18", 2).state_dict()
    saved = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    for k, v in fresh.items():
        assert torch.equal(saved[f"encoder.{k}"], v), k  # weights and BN statistics


def test_head_gradients_are_rescaled_and_absent_heads_get_none():
    torch.manual_seed(0)
    net = MultiTaskNet(ResNetEncoder("resnet18", 2), {"a": 2, "b": 3, "c": 2})
    feats = torch.randn(8, 512)
    task_ids = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 2, 0])
    loss, _, counts = multitask_loss(net.heads, feats, task_ids, labels, ["a", "b", "c"])
    loss.backward()
    rescale_head_grads(net.heads, counts, 8)
    # After rescaling, each head's gradient is that of the mean CE over its own samples.
    for name, idx in (("a", slice(0, 6)), ("b", slice(6, 8))):
        head = torch.nn.Linear(512, net.heads[name].out_features)
        head.load_state_dict(net.heads[name].state_dict())
        torch.nn.functional.cross_entropy(head(feats[idx]), labels[idx]).backward()
        assert torch.allclose(net.heads[name].weight.grad, head.weight.grad, atol=1e-6)
    assert net.heads["c"].weight.grad is None


@pytest.mark.parametrize("case, message", [
    ("one_class", "one class"),
    ("empty", "no labelled rows"),
    ("unseen", "label sets differ between splits"),
    ("bad_init", "encoder"),
])
def test_bad_input_is_one_line_and_leaves_nothing(tasks, tmp_path, case, message):
    signet, _ = tasks
    table = pd.read_csv(signet)
    table["path"] = [str(signet.parent / p) for p in table["path"]]
    init = []
    if case == "one_class":
        table["label"] = "signet"
    elif case == "empty":
        table["label"] = None
    elif case == "unseen":
        table.loc[table["split"] == "val", "label"] = "goblet"
    else:
        bad = tmp_path / "enc.pt"
        torch.save({"layer9.weight": torch.zeros(2)}, bad)
        init = ["--init", bad]
    csv = tmp_path / "t.csv"
    table.to_csv(csv, index=False)
    out = tmp_path / "run"
    code, text = run("pretrain", "-o", out, "--data", f"t={csv}", "--steps", 2, *init, *FAST)
    assert code == 2, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], text
    assert not out.exists()
