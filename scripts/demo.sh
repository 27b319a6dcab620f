#!/usr/bin/env bash
# Set up, make a phantom demo slide, segment it with the bundled model, show the outputs.
# Re-running is cheap: an existing demo slide and complete outputs are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
CERBERUS=.venv/bin/cerberus
mkdir -p demo
[ -f demo/phantom.svs ] || $CERBERUS synth slide demo/phantom.svs --size 4096x4096 --seed 7
$CERBERUS info demo/phantom.svs
$CERBERUS segment demo/phantom.svs -o demo/out --overlay-crops 2
for task in nuclei gland lumen; do
  $CERBERUS evaluate --task $task --metric pq --true demo/phantom.truth.parquet \
    --pred demo/out/phantom.parquet -o demo/$task.pq.json --overwrite
done
echo
# Expected: the whole-phantom-slide figures of the model card (models/default.md).
.venv/bin/python - <<'PY'
import json
import re
from pathlib import Path

card = Path("models/default.md").read_text()
print("Nuclei, gland and lumen PQ of this slide; expected = the model card's phantom slide at 0.5 um/px")
print(f"{'task':8} {'expected':>9} {'got':>7}")
for task in ("nuclei", "gland", "lumen"):
    m = re.search(rf"^\| {task} PQ \| [0-9.]+ \| ([0-9.]+) \|", card, re.M)
    expected = m.group(1) if m else "?"
    got = json.loads(Path(f"demo/{task}.pq.json").read_text())["overall"]["pq"]
    print(f"{task:8} {expected:>9} {got:7.3f}")
PY
echo
echo "Outputs in $(pwd)/demo/out:"
ls -1 demo/out
