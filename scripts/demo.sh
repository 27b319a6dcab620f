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
$CERBERUS segment demo/phantom.svs -o demo/out
$CERBERUS evaluate --task nuclei --metric pq --true demo/phantom.truth.parquet --pred demo/out/phantom.parquet
echo
echo "Outputs in $(pwd)/demo/out:"
ls -1 demo/out
