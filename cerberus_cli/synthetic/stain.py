"""Beer-Lambert stain model: haematoxylin and eosin densities to RGB.

Optical density per channel is ``OD = H * h + E * e + glass``, with ``h`` and ``e``
unit stain vectors (Macenko's reference H&E vectors), and ``RGB = 255 * exp(-OD)``.
A :class:`Stain` is drawn per tile or per slide, so colour varies as between labs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

#: Reference stain vectors (optical density per R, G, B), Macenko et al. 2009.
H_REF = np.array([0.5626, 0.7201, 0.4062])
E_REF = np.array([0.2159, 0.8012, 0.5581])
#: Typical stain strengths of the painted densities (scanned H&E is strongly stained).
H_GAIN, E_GAIN = 1.15, 1.4


@dataclass(frozen=True)
class Stain:
    """Stain vectors, concentration gains and the glass tint of one slide or tile."""

    h: np.ndarray
    e: np.ndarray
    h_gain: float = 1.0
    e_gain: float = 1.0
    glass: np.ndarray = field(default_factory=lambda: np.array([0.035, 0.04, 0.03]))

    @staticmethod
    def draw(rng: np.random.Generator, jitter: float = 1.0) -> Stain:
        """A plausible stain: vectors tilted a little, intensities +-20%."""
        h = H_REF + rng.normal(0, 0.05 * jitter, 3)
        e = E_REF + rng.normal(0, 0.05 * jitter, 3)
        h, e = np.clip(h, 0.05, None), np.clip(e, 0.05, None)
        return Stain(h / np.linalg.norm(h), e / np.linalg.norm(e),
                     H_GAIN * float(np.exp(rng.normal(0, 0.13 * jitter))),
                     E_GAIN * float(np.exp(rng.normal(0, 0.15 * jitter))),
                     np.clip(np.array([0.035, 0.04, 0.03]) + rng.normal(0, 0.01 * jitter, 3), 0.0, 0.1))

    def to_rgb(self, hem: np.ndarray, eos: np.ndarray) -> np.ndarray:
        """float32 RGB in [0, 255] from haematoxylin and eosin density maps."""
        m = np.column_stack([-self.h_gain * self.h, -self.e_gain * self.e, -self.glass]).astype(np.float32)
        ones = np.ones_like(hem)
        # Per pixel: -OD = M @ (H, E, 1); then exp, all in OpenCV's vectorised loops.
        neg_od = cv2.transform(cv2.merge([hem, eos, ones]), m)
        return cv2.exp(neg_od) * np.float32(255.0)


def finish(rgb: np.ndarray, blur_sigma: float, noise: np.ndarray | None) -> np.ndarray:
    """Optical blur and sensor noise, then uint8."""
    if blur_sigma > 0:
        rgb = cv2.GaussianBlur(rgb, (0, 0), blur_sigma)
    if noise is not None:
        rgb = rgb + noise
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Compress and decompress as JPEG (the artefacts of scanned slides)."""
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if decoded is None:
        raise RuntimeError("JPEG decoding failed")
    return decoded[..., ::-1].copy()
