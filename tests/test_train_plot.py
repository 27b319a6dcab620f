"""The run plot: smoothed losses cover the whole run, and the PNG is written."""

from __future__ import annotations

import cv2

from cerberus_cli.training.plot import plot_run, smooth


def test_smoothed_losses_start_at_the_first_logged_step():
    values = [(step, float(step % 2)) for step in range(1, 101)]  # 1, 0, 1, 0, ...
    out = smooth(values, window=20)
    assert [x for x, _ in out] == list(range(1, 101))
    assert out[0][1] == 1.0 and out[1][1] == 0.5 and out[2][1] == 2 / 3
    assert all(y == 0.5 for _, y in out[19:])  # full windows: ten of each


def test_plot_run_writes_both_panels(tmp_path):
    losses = {"tissue": [(s, 1.0 / s) for s in range(1, 50)], "anchor": [(s, 0.01) for s in range(2, 50, 2)]}
    metrics = {"tissue_acc": [(10, 0.5), (20, 0.9)]}
    path = plot_run(losses, metrics, tmp_path / "sub" / "plot.png", width=600)
    img = cv2.imread(str(path))
    assert img.shape == (640, 600, 3)
    assert (img < 250).any(axis=2).sum() > 2000  # curves, axes and labels drawn
