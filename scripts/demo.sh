#!/usr/bin/env bash
# Set up, make a phantom demo slide, segment it with the bundled model, segment a real H&E
# crop (tests/data, CoNSeP test image 10), score both against their truth, show the outputs.
# Re-running is cheap: an existing demo slide and complete outputs are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
CERBERUS=.venv/bin/cerberus
mkdir -p demo
[ -f demo/phantom.svs ] || $CERBERUS synth slide demo/phantom.svs --size 1536x1536 --seed 3
$CERBERUS info demo/phantom.svs
$CERBERUS segment demo/phantom.svs -o demo/out --overlay-crops 2
for task in nuclei gland lumen; do
  $CERBERUS evaluate --task $task --metric pq --true demo/phantom.truth.parquet \
    --pred demo/out/phantom.parquet -o demo/$task.pq.json --overwrite
done
# Real H&E: 480 px of CoNSeP test image 10 at 0.25 um/px, scored in CoNSeP's 4 classes.
REAL=tests/data/consep_test10_crop
$CERBERUS segment $REAL.jpg --mpp 0.25 --tissue-method all -o demo/real
$CERBERUS evaluate --task nuclei --true $REAL.instances.png --pred demo/real/consep_test10_crop.parquet \
  --class-map consep -m pq -m mpq -o demo/real.json --overwrite
echo
# Expected: the figures of the model card (models/default.md) for this slide and this crop.
.venv/bin/python - <<'PY'
import json
import re
from pathlib import Path

card = Path("models/default.md").read_text()


def expected(row: str) -> str:
    m = re.search(rf"^\| {re.escape(row)} \| ([0-9.]+) \|", card, re.M)
    return m.group(1) if m else "?"


print("Figures of this demo; expected = models/default.md, section 'What scripts/demo.sh shows'")
print(f"{'figure':44} {'expected':>9} {'got':>7}")
for task in ("nuclei", "gland", "lumen"):
    got = json.loads(Path(f"demo/{task}.pq.json").read_text())["overall"]["pq"]
    print(f"{'phantom slide ' + task + ' PQ':44} {expected(f'phantom slide {task} PQ'):>9} {got:7.3f}")
real = json.loads(Path("demo/real.json").read_text())["overall"]
for key, name in (("pq", "PQ"), ("mpq", "mPQ (4 classes)"), ("mpq_predictable", "mPQ (3 predictable)")):
    row = f"real crop nuclei {name}"
    print(f"{row:44} {expected(row):>9} {real[key]:7.3f}")
PY
echo
echo "Outputs in $(pwd)/demo/out:"
ls -1 demo/out
