"""Targets, augmentation and the task sampler."""

from __future__ import annotations

import numpy as np
import pytest

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.vocabulary import TISSUE
from cerberus_cli.training.augment import AugmentConfig, geometric, photometric
from cerberus_cli.training.datasets import IGNORE
from cerberus_cli.training.targets import (
    instance_targets,
    relabel,
    type_targets,
    unet_weight_map,
)
from cerberus_cli.training.task_sampler import (
    SEGMENTATION,
    SamplerConfig,
    TaskSampler,
)


def _two_touching_squares() -> np.ndarray:
    inst = np.zeros((40, 40), np.int32)
    inst[10:30, 5:20] = 1
    inst[10:30, 20:35] = 2
    return inst


def test_inner_and_boundary_per_instance():
    inst = _two_touching_squares()
    t = instance_targets(inst, kernel=3)
    # 3 px kernel: one pixel eroded from every side, one pixel of dilation outside.
    assert (t[11:29, 6:19] == 1).all() and (t[11:29, 21:34] == 1).all()
    assert (t[10, 5:35] == 2).all() and (t[9, 6:34] == 2).all()
    assert (t[10:30, 19:21] == 2).all()  # touching objects are separated by boundary
    assert t[0, 0] == 0 and t[5, 5] == 0
    wide = instance_targets(inst, kernel=11)
    assert (wide == 1).sum() < (t == 1).sum() and (wide[15:25, 10:15] == 1).all()


def test_unet_weights_peak_between_close_objects():
    inst = np.zeros((40, 60), np.int32)
    inst[10:30, 5:20] = 1
    inst[10:30, 22:37] = 2   # 2 px gap
    inst[10:30, 50:58] = 3   # far away
    w = unet_weight_map(inst, w0=10, sigma=5)
    assert (w[inst > 0] == 1).all()
    gap = w[20, 20:22].mean()
    assert gap > 8  # d1 + d2 ~ 2 px: close to 1 + w0
    assert w[20, 44] < gap and w[0, 0] < 1.5


def test_type_targets():
    inst = _two_touching_squares()
    types = np.where(inst == 1, 3, np.where(inst == 2, 0, 0)).astype(np.uint8)
    t = type_targets(inst, types)
    assert t[15, 10] == 3 and t[0, 0] == 0 and t[15, 25] == 0
    fg = type_targets(inst, types, foreground_only=True)
    assert fg[15, 10] == 3 and fg[0, 0] == IGNORE and fg[15, 25] == IGNORE
    assert (type_targets(inst, None) == IGNORE).all()


def test_geometric_augmentation_moves_labels_with_image():
    rng = np.random.default_rng(0)
    inst = np.zeros((100, 100), np.int32)
    inst[20:60, 30:50] = 7
    image = np.full((100, 100, 3), 200, np.uint8)
    image[inst > 0] = 40
    for seed in range(5):
        img, (lab,) = geometric(image, [inst], 64, AugmentConfig(affine_p=1.0), np.random.default_rng(seed))
        assert img.shape == (64, 64, 3) and lab.shape == (64, 64)
        assert set(np.unique(lab)) <= {0, 7}  # ids survive nearest-neighbour warps
        if (lab == 7).sum() > 20:
            assert img[lab == 7].mean() < 90 and img[lab == 0].mean() > 150
    out = photometric(image, AugmentConfig(), rng)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert relabel(np.array([[0, 5], [9, 5]])).tolist() == [[0, 1], [2, 1]]


def test_blur_probability_sets_the_share_of_softened_patches():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    only_blur = {"hsv_p": 0.0, "stain_p": 0.0}

    def blurred_share(p: float) -> float:
        cfg = AugmentConfig(blur_p=p, **only_blur)
        outs = [photometric(image, cfg, np.random.default_rng(k)) for k in range(200)]
        return float(np.mean([not np.array_equal(o, image) for o in outs]))

    # Sigmas under about 0.3 px leave a uint8 image as it was, so the shares are lower than p.
    assert blurred_share(0.0) == 0.0
    assert blurred_share(0.6) > 2.5 * blurred_share(0.2) > 0.2


def test_stronger_stain_augment_spreads_colours_more():
    from cerberus_cli.training.augment import stain_jitter

    rng = np.random.default_rng(0)
    image = rng.integers(60, 230, (32, 32, 3)).astype(np.uint8)

    def spread(strength: float) -> float:
        draws = [stain_jitter(image, strength, np.random.default_rng(k)).astype(float) for k in range(40)]
        return float(np.std([d.mean(axis=(0, 1)) for d in draws], axis=0).mean())

    light, strong = spread(0.05), spread(0.2)
    assert strong > 3 * light > 0
    assert spread(0.0) == 0.0


def test_sampler_is_a_pure_function_of_seed_and_step():
    cfg = SamplerConfig(sizes={"nuclei": 5, "gland": 3, "lumen": 2, "tissue": 9}, batch_size=6, seed=1)
    a, b = TaskSampler(cfg), TaskSampler(cfg)
    assert [a.plan(s) for s in range(20)] == [b.plan(s) for s in reversed(range(20))][::-1]
    plans = [a.plan(s) for s in range(400)]
    tissue = sum(p.super_task == TISSUE for p in plans) / len(plans)
    assert 0.2 < tissue < 0.4
    seg = [p for p in plans if p.super_task == SEGMENTATION]
    assert any(len(p.tasks) > 1 for p in seg)  # mixed batches
    counts = {t: sum(s.task == t for p in seg for s in p.samples) for t in ("gland", "lumen", "nuclei")}
    assert min(counts.values()) / max(counts.values()) > 0.7  # p = 1/T each
    assert all(s.index < cfg.sizes[s.task] for p in plans for s in p.samples)


def test_fixed_sampler_and_task_probs():
    cfg = SamplerConfig(sizes={"nuclei": 5, "gland": 3}, batch_size=4, mode="fixed",
                        task_probs={"nuclei": 1.0, "gland": 0.0})
    plans = [TaskSampler(cfg).plan(s) for s in range(30)]
    assert all(p.super_task == SEGMENTATION and p.tasks == ["nuclei"] for p in plans)
    with pytest.raises(InputError, match="tasks without training data"):
        TaskSampler(SamplerConfig(sizes={"nuclei": 5}, task_probs={"gland": 1.0}))
    with pytest.raises(InputError, match="no training data"):
        TaskSampler(SamplerConfig(sizes={}))


def test_tissue_batches_have_their_own_size():
    cfg = SamplerConfig(sizes={"nuclei": 5, "tissue": 9}, batch_size=3, tissue_batch_size=7, seed=2)
    plans = [TaskSampler(cfg).plan(s) for s in range(60)]
    assert {p.super_task for p in plans} == {SEGMENTATION, TISSUE}
    assert all(len(p.samples) == (7 if p.super_task == TISSUE else 3) for p in plans)
    with pytest.raises(InputError, match="tissue batch size must be at least 1"):
        TaskSampler(SamplerConfig(sizes={"tissue": 9}, tissue_batch_size=0))
