# The bundled default model (models/default.pt), as it was made.
# Phantom data (the generator's library call; `cerberus synth tiles` writes the same):
python -c "from cerberus_cli.synthetic.dataset import write_tile_dataset as w; w('phantom/val', count=27, size=448, seed=20261123); w('phantom/train', count=160, size=448, seed=7)"
#   = cerberus synth tiles -o phantom/val --count 27 --size 448 --seed 20261123
#   = cerberus synth tiles -o phantom/train --count 160 --size 448 --seed 7
# Training (2 shared CPU cores; stopped after the step-450 checkpoint for lack of time):
nice -n 10 cerberus train -o runs/default --data phantom/train --val-data phantom/val \
    --arch light --steps 600 --lr-drop-at 480 --batch-size 4 --patch 224 --tissue-patch 144 \
    --workers 1 --threads 2 --val-every 100 --val-limit 6 --checkpoint-every 50 --log-every 10 \
    --seed 0 --no-progress
# Export as int8 and measure the shipped file on all held-out tiles:
python models/training/export_default.py runs/default phantom/val --checkpoint last
