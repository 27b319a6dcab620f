"""Training targets computed from an (augmented) instance map.

* instance targets: 0 background, 1 eroded inner, 2 boundary (dilation minus erosion
  of each instance) with an elliptical kernel per task (11 px glands, 3 px lumina and
  nuclei), as in the reference Cerberus;
* U-Net weight maps (Ronneberger et al. 2015): ``1 + w0 exp(-(d1 + d2)^2 / 2 sigma^2)``
  on background pixels, d1 and d2 the distances to the nearest and second-nearest
  object, which makes the thin gaps between touching objects count;
* type maps: per-pixel object class, IGNORE where the type is unknown.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from cerberus_cli.training.datasets import IGNORE

#: Erosion/dilation kernel per instance task (pixels at the model resolution).
KERNELS = {"gland": 11, "lumen": 3, "nuclei": 3}


def _ellipse(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def instance_targets(instances: np.ndarray, kernel: int) -> np.ndarray:
    """uint8 map: 0 background, 1 eroded inner, 2 boundary.

    A pixel is inner when every pixel under the kernel belongs to its instance
    (grey erosion equals grey dilation equals the id); boundary is any other pixel
    within the kernel of an instance. This is the union of per-instance erosions and
    dilation-minus-erosion rings without a loop over instances.
    """
    lab = instances.astype(np.int32) if instances.dtype != np.int32 else instances
    k = _ellipse(kernel)
    # cv2 morphology has no int32 support: float32 holds ids exactly up to 2^24.
    labf = lab.astype(np.float32)
    lo = cv2.erode(labf, k, borderType=cv2.BORDER_REPLICATE)
    hi = cv2.dilate(labf, k, borderType=cv2.BORDER_REPLICATE)
    inner = (lab > 0) & (lo == labf) & (hi == labf)
    near = cv2.dilate((lab > 0).astype(np.uint8), k, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    out = np.zeros(lab.shape, np.uint8)
    out[near] = 2
    out[inner] = 1
    return out


def unet_weight_map(instances: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """float32 U-Net border weight map (1 inside objects and far from them).

    Distances are computed per object inside its bounding box grown by 3 sigma:
    beyond that the weight term is below exp(-18) and is dropped.
    """
    h, w = instances.shape
    reach = int(np.ceil(3 * sigma))
    d1 = np.full((h, w), float(reach), np.float32)
    d2 = np.full((h, w), float(reach), np.float32)
    for idx, sl in enumerate(ndimage.find_objects(instances), start=1):
        if sl is None:
            continue
        y0, y1 = max(0, sl[0].start - reach), min(h, sl[0].stop + reach)
        x0, x1 = max(0, sl[1].start - reach), min(w, sl[1].stop + reach)
        mask = instances[y0:y1, x0:x1] == idx
        d = np.minimum(ndimage.distance_transform_edt(~mask), reach).astype(np.float32)
        a, b = d1[y0:y1, x0:x1], d2[y0:y1, x0:x1]
        b[...] = np.minimum(b, np.maximum(a, d))
        a[...] = np.minimum(a, d)
    weight = 1.0 + w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    weight[instances > 0] = 1.0
    return weight.astype(np.float32)


def type_targets(instances: np.ndarray, types: np.ndarray | None, foreground_only: bool = False) -> np.ndarray:
    """uint8 type map: the object class on object pixels, 0 elsewhere, IGNORE unknown.

    Without type labels the whole map is IGNORE. With ``foreground_only`` (the
    subtyping stage) background and no-label pixels are IGNORE too.
    """
    if types is None:
        return np.full(instances.shape, IGNORE, np.uint8)
    out = types.astype(np.uint8, copy=True)
    out[instances == 0] = IGNORE if foreground_only else 0
    if foreground_only:
        out[out == 0] = IGNORE
    return out


def relabel(instances: np.ndarray) -> np.ndarray:
    """Consecutive ids 1..N (after cropping and warping, ids can be sparse)."""
    ids, inv = np.unique(instances, return_inverse=True)
    if ids[0] != 0:
        return (inv.reshape(instances.shape) + 1).astype(np.int32)
    return inv.reshape(instances.shape).astype(np.int32)
