"""Write the terms of a checkpoint's weights into its provenance (tensors untouched).

    python model-training/stamp_licence.py models/phantom.pt phantom

``phantom``: trained on cerberus' own synthetic data, MIT like the code. ``real``: the
terms the public training data (MoNuSeg, CoNSeP, GlaS) pass on to the weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from cerberus_cli.core.atomic import AtomicPath

TERMS = {
    "phantom": {
        "weights": "MIT (trained only on cerberus' own synthetic phantoms)",
        "data": ["cerberus synth tiles (MIT)"],
    },
    "real": {
        "weights": "non-commercial research use only, with attribution: trained on MoNuSeg "
                   "(CC BY-NC-SA 4.0, Kumar et al. 2017/2020), CoNSeP (research use, Graham et al. "
                   "2019) and GlaS (research use only, no commercial use, Sirinukunwattana et al. "
                   "2017); the cerberus code is MIT, these weights are not",
        "data": ["MoNuSeg 2018 train: CC BY-NC-SA 4.0",
                 "CoNSeP train: research use as released by its authors (TIA Centre, Warwick)",
                 "GlaS train: research use only, commercial use not allowed",
                 "cerberus synth tiles (MIT)"],
    },
}


def stamp(path: Path, kind: str) -> None:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload["provenance"] = {**payload.get("provenance", {}), "licence": TERMS[kind]}
    target = AtomicPath(path, overwrite=True)
    torch.save(payload, target.tmp)
    target.commit()


if __name__ == "__main__":
    stamp(Path(sys.argv[1]), sys.argv[2])
