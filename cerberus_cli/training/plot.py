"""A loss/metric plot PNG drawn with OpenCV (no plotting library needed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _panel(series: dict[str, list[tuple[float, float]]], title: str, size: tuple[int, int],
           log_y: bool) -> np.ndarray:
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 60, 170, 30, 35
    cv2.putText(img, title, (left, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    pts = [(x, y) for s in series.values() for x, y in s if np.isfinite(y) and (y > 0 or not log_y)]
    if not pts:
        cv2.putText(img, "no data", (w // 2 - 30, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
        return img
    xs = np.array([p[0] for p in pts])
    ys = np.array([p[1] for p in pts])
    ty = np.log10 if log_y else (lambda v: v)
    x0, x1 = xs.min(), max(xs.max(), xs.min() + 1)
    y0, y1 = ty(ys.min()), ty(ys.max())
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pw, ph = w - left - right, h - top - bottom

    def to_px(x: float, y: float) -> tuple[int, int]:
        return (int(left + (x - x0) / (x1 - x0) * pw), int(top + ph - (ty(y) - y0) / (y1 - y0) * ph))

    cv2.rectangle(img, (left, top), (left + pw, top + ph), (0, 0, 0), 1)
    for frac in (0.0, 0.5, 1.0):
        yv = y0 + frac * (y1 - y0)
        label = f"{10 ** yv:.3g}" if log_y else f"{yv:.3g}"
        py = int(top + ph - frac * ph)
        cv2.putText(img, label, (2, py + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        xv = x0 + frac * (x1 - x0)
        cv2.putText(img, f"{xv:.0f}", (int(left + frac * pw) - 10, top + ph + 18),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (name, s) in enumerate(sorted(series.items())):
        color = _COLORS[i % len(_COLORS)][::-1]
        good = [(x, y) for x, y in s if np.isfinite(y) and (y > 0 or not log_y)]
        if len(good) > 1:
            cv2.polylines(img, [np.array([to_px(x, y) for x, y in good], np.int32)], False, color, 1, cv2.LINE_AA)
        elif good:
            cv2.circle(img, to_px(*good[0]), 3, color, -1)
        ly = top + 14 + 16 * i
        cv2.line(img, (left + pw + 10, ly - 4), (left + pw + 30, ly - 4), color, 2)
        cv2.putText(img, name, (left + pw + 35, ly), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def smooth(values: list[tuple[float, float]], window: int = 20) -> list[tuple[float, float]]:
    """Trailing mean over up to ``window`` points (losses are noisy per batch); the first
    points average what came before them, so the curve starts at the run's first step."""
    if len(values) < 3:
        return values
    ys = np.concatenate([[0.0], np.cumsum([v[1] for v in values], dtype=float)])
    out = []
    for i, (x, _) in enumerate(values):
        lo = max(0, i + 1 - window)
        out.append((x, float((ys[i + 1] - ys[lo]) / (i + 1 - lo))))
    return out


def plot_run(losses: dict[str, list[tuple[float, float]]], metrics: dict[str, list[tuple[float, float]]],
             path: str | Path, width: int = 900) -> Path:
    """Write a two-panel PNG: smoothed training losses (log scale) and validation metrics."""
    top = _panel({k: smooth(v) for k, v in losses.items()}, "training loss (smoothed) vs step",
                 (width, 320), log_y=True)
    bottom = _panel(metrics, "validation metrics vs step", (width, 320), log_y=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack([top, bottom]))
    return path
