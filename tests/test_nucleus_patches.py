"""``cerberus synth nuclei``: nucleus-type phantom patches as a patch table."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pandas as pd
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.core.vocabulary import NUCLEUS_TYPES
from cerberus_cli.synthetic.nucleus_patches import nucleus_patches


def test_synth_nuclei_writes_a_centred_typed_patch_table(tmp_path):
    outs = []
    for name in ("a", "b"):
        res = CliRunner().invoke(main, ["synth", "nuclei", "-o", str(tmp_path / name), "--count", "40",
                                        "--size", "32", "--per-tile", "12", "--seed", "2"])
        assert res.exit_code == 0, res.output
        outs.append(tmp_path / name / "nuclei.csv")
    table = pd.read_csv(outs[0])
    assert list(table.columns) == ["path", "label", "group", "split"]
    assert 0 < len(table) <= 40 and table["group"].nunique() >= 4
    assert set(table["label"]) <= {c.name for c in NUCLEUS_TYPES[1:]}
    # Whole groups in one split; val/test only hold types that train has.
    assert (table.groupby("group")["split"].nunique() == 1).all()
    train = set(table.loc[table["split"] == "train", "label"])
    assert set(table.loc[table["split"] != "train", "label"]) <= train and len(train) >= 2
    # Same seed, same bytes.
    digest = [hashlib.sha256(b"".join((o.parent / p).read_bytes() for p in pd.read_csv(o)["path"])).hexdigest()
              for o in outs]
    assert digest[0] == digest[1]
    # The nucleus sits in the centre: the centre is darker (haematoxylin) than the border.
    darker = 0
    for p in table["path"]:
        img = cv2.imread(str(outs[0].parent / p)).astype(float).sum(2)
        darker += img[14:18, 14:18].mean() < np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]).mean()
    assert darker >= 0.9 * len(table)


def test_patches_are_at_most_per_tile_and_fit_the_tile():
    got = nucleus_patches(seed=0, tile_index=1, size=48, per_tile=5)
    assert 0 < len(got) <= 5
    assert all(img.shape == (48, 48, 3) and img.dtype == np.uint8 for img, _ in got)
