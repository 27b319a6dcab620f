"""Training throughput (samples/s per super-task) of ``train_step``.

    python benchmarks/bench_train.py PHANTOM_DIR [--arch light] [--patch 224]
        [--tissue-patch 144] [--batch-size 4] [--steps 10] [--device auto] [--amp]

Batches are built once from a ``cerberus synth tiles`` folder (augmentation and
targets included, so their cost is not part of the number: in training they are
built by worker processes in parallel), then timed through forward, masked losses,
backward and the Adam update. The first two steps of each super-task are warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from cerberus_cli.training.augment import AugmentConfig
from cerberus_cli.training.batches import BatchBuilder, PatchConfig
from cerberus_cli.training.formats.phantom import open_phantom
from cerberus_cli.training.model_init import build_model
from cerberus_cli.training.task_sampler import (
    SEGMENTATION,
    TISSUE,
    BatchPlan,
    SamplerConfig,
    SampleSpec,
    TaskSampler,
)
from cerberus_cli.training.trainer import train_step

TASKS = ("gland", "lumen", "nuclei", "tissue")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("phantom_dir")
    p.add_argument("--arch", default="light")
    p.add_argument("--patch", type=int, default=224)
    p.add_argument("--tissue-patch", type=int, default=144)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true")
    args = p.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    datasets = {t: open_phantom(Path(args.phantom_dir), t) for t in TASKS}
    sampler = TaskSampler(SamplerConfig(sizes={t: len(d) for t, d in datasets.items()}))
    builder = BatchBuilder(datasets, sampler, PatchConfig(args.patch, args.tissue_patch), AugmentConfig(), 1)
    model, _ = build_model(args.arch, "random", list(TASKS), args.tissue_patch)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if args.amp else None
    scaler = torch.amp.GradScaler("cuda") if args.amp and device.type == "cuda" else None
    results = {}
    b = args.batch_size
    for super_task in (SEGMENTATION, TISSUE):
        tasks = [TISSUE] * b if super_task == TISSUE else [("gland", "lumen", "nuclei")[i % 3] for i in range(b)]
        batches = [builder.build(BatchPlan(s, super_task, tuple(
            SampleSpec(t, (s * b + i) % len(datasets[t]), s * b + i) for i, t in enumerate(tasks))))
            for s in range(args.steps + 2)]
        times = []
        for i, batch in enumerate(batches):
            t0 = time.perf_counter()
            train_step(model, opt, batch, device, scaler=scaler, amp_dtype=amp_dtype)
            if i >= 2:
                times.append(time.perf_counter() - t0)
        results[super_task] = {"samples_per_s": round(b * len(times) / sum(times), 2),
                               "s_per_step": round(sum(times) / len(times), 3)}
    print(json.dumps({
        "arch": args.arch, "patch": args.patch, "tissue_patch": args.tissue_patch, "batch_size": b,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(), "amp": args.amp, "results": results}, indent=2))


if __name__ == "__main__":
    main()
