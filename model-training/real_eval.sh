#!/usr/bin/env bash
# The real-tissue figures of a model card, measured with cerberus' own commands.
#
#   model-training/real_eval.sh MODEL OUT [REAL_TRAIN_DIR] [REAL_DIR]
#
# MODEL: registry name or checkpoint; OUT: a new folder for the outputs and reports.
# REAL_TRAIN_DIR holds the public annotated sets in the generic layout (default
# ../shared/real-train: nuclei-consep-test, gland-glas-testA), REAL_DIR the real stroma
# crop with nucleus polygons (default ../shared/real). Writes OUT/figures.json (every
# figure, from the reports below) and prints it.
set -euo pipefail
MODEL=$1
OUT=$2
REAL_TRAIN=${3:-../shared/real-train}
REAL=${4:-../shared/real}
HERE=$(cd "$(dirname "$0")" && pwd)
C="cerberus -q"
mkdir -p "$OUT"

# CoNSeP test (14 images, 1000 px at 0.25 um/px): PQ, DQ, SQ; mPQ and mPQ+ over its 4 classes.
$C segment "$REAL_TRAIN/nuclei-consep-test/images" --mpp 0.25 --tissue-method all --model "$MODEL" \
    -o "$OUT/consep" --no-overlay
$C evaluate --task nuclei --true "$REAL_TRAIN/nuclei-consep-test" --pred "$OUT/consep" --class-map consep \
    -m pq -m mpq -m mpq+ -o "$OUT/consep.json"

# GlaS test A (60 images at 0.62005 um/px): the GlaS challenge metrics and PQ.
$C segment "$REAL_TRAIN/gland-glas-testA/images" --mpp 0.62005 --tissue-method all --model "$MODEL" \
    -o "$OUT/glas" --no-overlay
$C evaluate --task gland --true "$REAL_TRAIN/gland-glas-testA" --pred "$OUT/glas" -m glas -m pq \
    -o "$OUT/glas.json"

# The real stroma crop (1500 px, ~0.5 um/px, polygons from another model) and the two
# crops of tests/data.
python "$HERE/real_crop.py" "$REAL/hgsc_stromal_cells.parquet" "$REAL/hgsc_stromal_he.jpg" "$OUT/gt"
$C segment "$OUT/gt/real.png" --mpp 0.5 --model "$MODEL" -o "$OUT/stroma" --no-overlay
$C evaluate --task nuclei -m pq --true "$OUT/gt/real.truth.parquet" --pred "$OUT/stroma/real.parquet" \
    -o "$OUT/stroma.json"
DATA=$HERE/../tests/data
$C segment "$DATA/hgsc_crop.jpg" --mpp 0.5 --model "$MODEL" -o "$OUT/hgsc_crop" --no-overlay
$C evaluate --task nuclei -m pq --true "$DATA/hgsc_crop.truth.parquet" --pred "$OUT/hgsc_crop/hgsc_crop.parquet" \
    -o "$OUT/hgsc_crop.json"
$C segment "$DATA/consep_test10_crop.jpg" --mpp 0.25 --tissue-method all --model "$MODEL" \
    -o "$OUT/consep_crop" --no-overlay
$C evaluate --task nuclei --true "$DATA/consep_test10_crop.instances.png" \
    --pred "$OUT/consep_crop/consep_test10_crop.parquet" --class-map consep -m pq -m mpq \
    -o "$OUT/consep_crop.json"

# The real Aperio slide (no labels): nuclei on the dermis fibres, gland area; with and
# without stain normalisation.
$C segment "$DATA/cmu_small_region.svs" --model "$MODEL" -o "$OUT/aperio" --overlay-crops 1
$C segment "$DATA/cmu_small_region.svs" --model "$MODEL" -o "$OUT/aperio_macenko" --stain-norm macenko \
    --no-overlay

python - "$OUT" <<'PY'
import json
import sys
from pathlib import Path

import geopandas as gpd

out = Path(sys.argv[1])


def overall(name):
    return json.loads((out / f"{name}.json").read_text())["overall"]


def aperio(folder):
    objects = gpd.read_parquet(out / folder / "cmu_small_region.parquet")
    nuclei = objects[objects.task == "nuclei"]
    glands = objects[objects.task == "gland"]
    return {"nuclei": int(len(nuclei)), "nuclei_over_150um2": int((nuclei.area_um2 > 150).sum()),
            "largest_nucleus_um2": float(nuclei.area_um2.max()) if len(nuclei) else 0.0,
            "gland_mm2": float(glands.area_um2.sum() / 1e6), "glands": int(len(glands)),
            "nucleus_classes": {str(k): int(v) for k, v in nuclei.class_name.value_counts().items()}}


figures = {"consep_test": overall("consep"), "glas_testA": overall("glas"),
           "stroma_crop": overall("stroma"), "tests_data_hgsc_crop": overall("hgsc_crop"),
           "tests_data_consep_crop": overall("consep_crop"),
           "aperio": aperio("aperio"), "aperio_macenko": aperio("aperio_macenko")}
text = json.dumps(figures, indent=2, sort_keys=True)
(out / "figures.json").write_text(text + "\n")
print(text)
PY
