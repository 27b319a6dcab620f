# The bundled default model (models/default.pt), as it was made, stage by stage.
# Phantom data (`cerberus synth tiles`; the same seeds give byte-identical folders):
cerberus synth tiles -o phantom/val --count 27 --size 448 --seed 20261123
cerberus synth tiles -o phantom/train0 --count 160 --size 448 --seed 7     # stage 1
cerberus synth tiles -o phantom/train --count 320 --size 448 --seed 7      # stages 2-4

# Stage 1 (record: default/): all tasks, mixed batches, from random weights. Planned for
# 600 steps on 2 shared CPU cores; stopped after the step-450 checkpoint.
cerberus train -o runs/default --data phantom/train0 --val-data phantom/val \
    --arch light --steps 600 --lr-drop-at 480 --batch-size 4 --patch 224 --tissue-patch 144 \
    --workers 1 --threads 2 --val-every 100 --val-limit 6 --checkpoint-every 50 --log-every 10 \
    --seed 0 --no-progress

# Stage 2 (record: seg/): gland, lumen and nuclei segmentation (with their type heads),
# one task per batch (fixed batches decode only that task's decoders, about half the
# work of a mixed batch on a CPU), weighted towards glands and lumina. Run for 1150
# steps, then resumed to 1400; the shipped weights are its best checkpoint (step 1250,
# highest validation score on 8 held-out tiles per task).
cerberus train -o runs/seg --data phantom/train --val-data phantom/val --tasks gland,lumen,nuclei \
    --init runs/default/checkpoints/last.pt --arch light --steps 1150 --lr-drop-at 950 \
    --batch-size 4 --patch 256 --sampler fixed --task-probs gland=0.45,lumen=0.35,nuclei=0.2 \
    --workers 1 --threads 2 --val-every 250 --val-limit 8 --checkpoint-every 50 --log-every 10 \
    --seed 1 --no-progress
cerberus train -o runs/seg --resume --steps 1400 --workers 1 --threads 2 --no-progress

# Stages 3 and 4 (records: tissue/, tissue2/): the tissue-type head alone on the frozen
# encoder of stage 2 (the segmentation heads are untouched).
cerberus train -o runs/tissue --subtype tissue --init runs/seg/checkpoints/best.pt \
    --data tissue=phantom/train/tissue --val-data tissue=phantom/val/tissue \
    --steps 400 --lr-drop-at 300 --batch-size 8 --tissue-patch 144 \
    --workers 1 --threads 2 --val-every 100 --val-limit 27 --checkpoint-every 50 --log-every 10 \
    --seed 3 --no-progress
cerberus train -o runs/tissue2 --subtype tissue --init runs/tissue/checkpoints/last.pt \
    --data tissue=phantom/train/tissue --val-data tissue=phantom/val/tissue \
    --steps 1000 --lr-drop-at 800 --batch-size 8 --tissue-patch 144 \
    --workers 1 --threads 2 --val-every 200 --val-limit 27 --checkpoint-every 100 --log-every 20 \
    --seed 4 --no-progress

# Stage 5 (record: tissue3/): tissue type learnt by the encoder's deepest block. From the
# stage-4 model as it shipped (models/default.pt, int8, sha256 9b2b2918...), layer4, the
# bridge and the tissue head train on 2880 tissue patches, while about half the batches
# (--tissue-prob 0.5) are anchor batches of segmentation patches that hold the bridge
# output (the decoders' input) to the stage-4 model's; the shallower blocks, decoders and
# heads stay frozen.
cerberus synth tiles -o phantom/train_tissue --tasks tissue --count 2880 --size 448 --seed 7
cerberus train -o runs/tissue3 --subtype tissue --tune-deepest --init default \
    --data tissue=phantom/train_tissue/tissue --data gland:phantom=phantom/train \
    --data lumen:phantom=phantom/train --data nuclei:phantom=phantom/train --val-data phantom/val \
    --steps 3000 --lr 1e-3 --lr-drop-at 2400 --batch-size 4 --tissue-batch-size 16 --patch 256 \
    --tissue-patch 144 --tissue-prob 0.5 --anchor-weight 10 \
    --workers 1 --threads 2 --val-every 1000 --val-limit 27 --checkpoint-every 250 --log-every 20 \
    --seed 5 --no-progress

# Stage 6 (record: nuclei_varied/): the nuclei and nuclei-type decoders and heads alone
# (--freeze-encoder keeps the encoder and the bridge, so gland, lumen and tissue outputs
# are those of stage 5), from the stage-5 model as it shipped (sha256 6e6dc129...), on
# 500 varied phantom tiles (real-sized textured nuclei, purple fibres and strands) plus
# the 320 colon nuclei tiles of stages 2-4, with strong stain jitter. Its varied
# validation tiles were rendered by the generator at commit 3a88c2f (before the thin dark
# strands); they only feed the logged validation, the last checkpoint ships.
cerberus synth tiles -o phantom/varied --tasks nuclei --scene varied --count 500 --seed 10
cerberus synth tiles -o phantom/varied_val --tasks nuclei --scene varied --count 24 --seed 20261124
cerberus synth tiles -o phantom/colon_nuclei --tasks nuclei --count 320 --seed 7
cerberus train -o runs/nuclei_varied --data nuclei=phantom/varied --data nuclei=phantom/colon_nuclei \
    --val-data nuclei=phantom/varied_val --val-data nuclei=phantom/val --tasks nuclei \
    --freeze-encoder --init default --arch light --steps 1200 --lr 5e-4 --lr-drop-at 1000 \
    --batch-size 4 --patch 256 --stain-augment 0.3 --workers 1 --threads 2 --val-every 600 \
    --val-limit 12 --checkpoint-every 100 --log-every 20 --seed 15 --no-progress

# Stage 7 (record: lumen_blur/): the lumen decoder and head alone (--freeze-encoder: the
# encoder and the bridge kept, so nuclei, gland and tissue outputs are those of stage 6),
# from the stage-6 model as it shipped (sha256 e62c6c07...), on the 320 colon lumen tiles
# of stages 2-4 with a blur on 60 % of the patches (--blur-augment 0.6): the lumen PQ of
# stage 6 fell from 0.759 to 0.655 on a phantom slide blurred by 0.6 px and was 0.706 on
# the same tissue at 40x.
cerberus synth tiles -o phantom/train_lumen --tasks lumen --count 320 --size 448 --seed 7
cerberus train -o runs/lumen_blur --init default --freeze-encoder --tasks lumen \
    --data lumen=phantom/train_lumen/lumen --val-data phantom/val --steps 600 --lr 1e-4 \
    --lr-drop-at 450 --lr-drop-to 2e-5 --batch-size 4 --patch 256 --sampler fixed \
    --blur-augment 0.6 --workers 1 --threads 2 --val-every 150 --val-limit 27 \
    --checkpoint-every 50 --log-every 10 --seed 12 --no-progress

# Export as int8, measure the shipped file on all held-out tiles (validation set), on
# a test set never used for any choice, and on 540 more tissue patches:
cerberus synth tiles -o phantom/test --count 27 --size 448 --seed 20261201
cerberus synth tiles -o phantom/tissue_test --tasks tissue --count 540 --size 448 --seed 99
python model-training/export_model.py --name phantom --licence phantom phantom/val phantom/test \
    model-training/default model-training/seg model-training/tissue model-training/tissue2 \
    model-training/tissue3 model-training/nuclei_varied runs/lumen_blur \
    --tissue-test phantom/tissue_test

# Tried before stage 7, not shipped (record: gland_blur/): the gland and gland-type
# decoders and heads alone, the same way, at 3e-4. Gland PQ rose on phantoms (validation
# 0.764 -> 0.820, the blurred slide 0.823 -> 0.931) but on the real Aperio slide the
# gland area grew from 0.116 to 0.374 mm^2 (0.118 to 0.208 with --stain-norm macenko),
# mostly "surface epithelium" on the dermis's fibres. The same run with the lumen decoder too
# (gland,lumen) drew lumina 13 % small on the phantom slides.
cerberus synth tiles -o phantom/train_gland --tasks gland --count 320 --size 448 --seed 7
cerberus train -o runs/gland_blur --init default --freeze-encoder --tasks gland \
    --data gland=phantom/train_gland/gland --val-data phantom/val --steps 600 --lr 3e-4 \
    --lr-drop-at 450 --lr-drop-to 5e-5 --batch-size 4 --patch 256 --sampler fixed \
    --blur-augment 0.6 --workers 1 --threads 2 --val-every 150 --val-limit 27 \
    --checkpoint-every 50 --log-every 10 --seed 11 --no-progress

# Tried before stage 5, not shipped (record: joint_trial/): the whole encoder trained for
# tissue type jointly with segmentation, to lift tissue accuracy. Tissue batches of 16 from 1440 patches,
# keeping the encoder's batch-norm statistics; 400 steps at 1e-4. Validation tissue
# accuracy went from 0.778 to 0.852 (step 100) and stayed there, while gland PQ fell
# to 0.66-0.71 and lumen PQ to 0.73-0.82, so the shipped model is stage tissue2.
cerberus synth tiles -o phantom/train_tissue --tasks tissue --count 1440 --size 448 --seed 7
cerberus train -o runs/joint --data gland:phantom=phantom/train --data lumen:phantom=phantom/train \
    --data nuclei:phantom=phantom/train --data phantom/train_tissue --val-data phantom/val \
    --init runs/tissue2/checkpoints/last.pt --arch light --steps 400 --lr 1e-4 --lr-drop-at 400 \
    --batch-size 4 --tissue-batch-size 16 --tissue-bn keep --patch 256 --tissue-patch 144 \
    --sampler fixed --tissue-prob 0.6 --task-probs gland=0.45,lumen=0.35,nuclei=0.2 \
    --workers 1 --threads 2 --val-every 100 --val-limit 27 --checkpoint-every 50 --log-every 5 \
    --seed 6 --no-progress

# Tried after the phantom rasters were found 1.22x their polygons, not shipped (record:
# nuclei_px_trial/): with the polygons filled by the pixel-centre rule (tiles of polygon
# area), the nuclei decoder and head alone fine-tuned from the shipped model. Stopped
# at step 30 (about 16 s a step on the shared 2-core machine); the rasters went back to
# cv2 filling and the slide truth of nuclei is traced from them instead (models/default.md,
# "Whole phantom slides against tiles").
cerberus synth tiles -o phantom/train_px --tasks nuclei --count 320 --size 448 --seed 7
cerberus synth tiles -o phantom/val_px --count 27 --size 448 --seed 20261123
cerberus train -o runs/nuclei_px --data nuclei:phantom=phantom/train_px \
    --val-data nuclei:phantom=phantom/val_px --tasks nuclei --freeze-encoder --init default \
    --steps 300 --lr 3e-4 --lr-drop-at 240 --batch-size 4 --patch 256 --workers 1 --threads 1 \
    --val-every 100 --val-limit 27 --checkpoint-every 50 --log-every 10 --seed 8 --no-progress

# Whole-slide and real-H&E figures of models/default.md:
cerberus synth slide b05.svs --size 4096x4096 --seed 3
cerberus synth slide b025.svs --size 8192x8192 --seed 3 --mpp 0.25
cerberus synth slide s05.svs --size 1536x1536 --seed 3
cerberus synth slide s025.svs --size 3072x3072 --seed 3 --mpp 0.25
cerberus synth tiles -o slide_tiles --tasks gland,lumen,nuclei --scene slide --count 100 \
    --size 448 --seed 20261123
python model-training/phantom_eval.py default slide_tiles
for s in b05 b025 s05 s025; do
  cerberus segment $s.svs -o out_$s
  for t in nuclei gland lumen; do
    cerberus evaluate --task $t -m pq --true $s.truth.parquet --pred out_$s/$s.parquet -o $s.$t.json
  done
done
python model-training/real_crop.py ../shared/real/hgsc_stromal_cells.parquet \
    ../shared/real/hgsc_stromal_he.jpg gt/
cerberus segment gt/real.png --mpp 0.5 -o out_real --stain-norm macenko   # and the other rows
cerberus evaluate --task nuclei -m pq --true gt/real.truth.parquet --pred out_real/real.parquet
# The classical yardstick of the same section (F = 1, 1.3, 1.6):
python model-training/real_crop_classical.py gt/real.png classical.parquet --factor 1.3
cerberus evaluate --task nuclei -m pq --true gt/real.truth.parquet --pred classical.parquet

# ---------------------------------------------------------------------------------------
# The bundled default model since the real-data round (models/default.pt, card
# models/default.md): real annotated H&E from ../shared/real-train (MoNuSeg train, CoNSeP
# train, GlaS train; read its README and LICENSES: the weights inherit their terms) plus
# the phantom tiles of stages 2-4 (phantom/train, seed 7) for lumina and tissue type, which
# no real set labels. Run from a folder holding phantom/ (call it ph/ if a folder named
# "phantom" would shadow the registry name in --init phantom). --init phantom is
# models/phantom.pt as it was before its licence stamp (sha256 8b74851c...; same tensors).
R=../shared/real-train
cerberus synth tiles -o phantom/train --count 320 --size 448 --seed 7
cerberus synth tiles -o phantom/val --count 27 --size 448 --seed 20261123
cerberus synth tiles -o phantom/test --count 27 --size 448 --seed 20261201
cerberus synth tiles -o phantom/tissue_test --tasks tissue --count 540 --size 448 --seed 99

# Stage real_seg (record: real_seg/): every head but the tissue type from the phantom
# model, encoder included; fixed batches, nuclei 0.55 / gland 0.3 / lumen 0.15, tissue
# batches of 16 at 0.1; within a task the sources are weighted (CoNSeP 1, MoNuSeg 0.6,
# phantom 0.15; GlaS 1, phantom 0.15); CoNSeP's 4 classes through the consep class map;
# strong stain (0.2), blur (0.3) and scale (0.2) augmentation. Planned for 3000 steps (1e-4
# from 2400) on the 2 CPU cores; stopped after the step-2600 checkpoint to leave time for
# the measurements (validation at 1000 and 2000 only: 10 items per task, most of them
# phantom, so not a real-tissue figure).
cerberus train -o runs/real_seg --init phantom \
    --data nuclei@1=$R/nuclei-consep-train --class-map $R/nuclei-consep-train=consep \
    --data nuclei@0.6=$R/nuclei-monuseg-train --data nuclei@0.15=phantom/train/nuclei \
    --data gland@1=$R/gland-glas-train --data gland@0.15=phantom/train/gland \
    --data lumen=phantom/train/lumen --data tissue=phantom/train/tissue \
    --steps 3000 --lr 1e-3 --lr-drop-at 2400 --batch-size 4 --tissue-batch-size 16 --patch 256 \
    --sampler fixed --tissue-prob 0.1 --task-probs nuclei=0.55,gland=0.3,lumen=0.15 \
    --scale-augment 0.2 --stain-augment 0.2 --blur-augment 0.3 \
    --workers 1 --threads 2 --val-every 1000 --val-limit 10 --checkpoint-every 50 --log-every 10 \
    --seed 25 --no-progress
# (resumable at any checkpoint: cerberus train -o runs/real_seg --resume --steps 3000)

# Stage real_seg2 (record: real_seg2/): real_seg's step-2600 checkpoint continued as a new
# run with a fresh schedule (Adam 5e-4, 1e-4 from step 1600, 2000 steps), stronger stain
# jitter (0.3), tissue batches at 0.05 and task shares nuclei 0.6 / gland 0.3 / lumen 0.1;
# same sources and weights. Phantom lumen PQ held (0.92 on the validation items at step
# 2000), so no separate lumen stage this time.
cerberus train -o runs/real_seg2 --init runs/real_seg/checkpoints/last.pt \
    --data nuclei@1=$R/nuclei-consep-train --class-map $R/nuclei-consep-train=consep \
    --data nuclei@0.6=$R/nuclei-monuseg-train --data nuclei@0.15=phantom/train/nuclei \
    --data gland@1=$R/gland-glas-train --data gland@0.15=phantom/train/gland \
    --data lumen=phantom/train/lumen --data tissue=phantom/train/tissue \
    --steps 2000 --lr 5e-4 --lr-drop-at 1600 --batch-size 4 --tissue-batch-size 16 --patch 256 \
    --sampler fixed --tissue-prob 0.05 --task-probs nuclei=0.6,gland=0.3,lumen=0.1 \
    --scale-augment 0.2 --stain-augment 0.3 --blur-augment 0.3 \
    --workers 1 --threads 2 --val-every 1000 --val-limit 10 --checkpoint-every 50 --log-every 10 \
    --seed 26 --no-progress

# Stage real_tissue2 (record: real_tissue2/): the tissue-type head alone on real_seg2's frozen
# encoder (nuclei, gland and lumen outputs are exactly real_seg2's).
cerberus train -o runs/real_tissue2 --subtype tissue --init runs/real_seg2/checkpoints/last.pt \
    --data tissue=phantom/train/tissue --val-data tissue=phantom/val/tissue --steps 500 --lr-drop-at 400 \
    --batch-size 16 --tissue-patch 144 --workers 1 --threads 2 --val-every 500 --val-limit 27 \
    --checkpoint-every 100 --log-every 20 --seed 28 --no-progress

# The release after real_tissue2 (sha256 80ad1ded...) was exported from these stages:
#   python model-training/export_model.py --name default --licence real phantom/val phantom/test \
#       runs/real_seg runs/real_seg2 runs/real_tissue2 --tissue-test phantom/tissue_test

# Gland post-processing calibration (model-training/gland_calibration/), chosen on GlaS
# train: the 80ad1ded release's maps of its 85 images, every gland setting scored by
# object F1 and Dice; the same sweep on the shipped model's maps checks the choice.
cerberus segment $R/gland-glas-train/images --mpp 0.62005 --tissue-method all --save-maps \
    --no-overlay --model default -o glas_train_maps
python model-training/gland_pp_sweep.py glas_train_maps $R/gland-glas-train/instances
python model-training/gland_pp_sweep.py glas_train_maps $R/gland-glas-train/instances \
    --thresholds 0.45,0.5 --min-sizes 3000,4000,5000,6000,8000 --kernels 15,19
# ... and, after the export below, on the shipped model's maps (sweep_7e831a6b.txt):
cerberus segment $R/gland-glas-train/images --mpp 0.62005 --tissue-method all --save-maps \
    --no-overlay --model default --no-model-calibration -o glas_train_maps3
python model-training/gland_pp_sweep.py glas_train_maps3 $R/gland-glas-train/instances \
    --thresholds 0.5,0.55 --min-sizes 400,2000,3000,4000 --kernels 11,15

# Stage real_seg3 (record: real_seg3/): the 80ad1ded release (real_tissue2's weights, int8)
# continued as a new run (--init default: no optimiser state), weighted towards glands
# (nuclei 0.5, gland 0.4, lumen 0.1); Adam 3e-4, 1e-4 from step 1150; sources, weights and
# augmentations as real_seg2.
cerberus train -o runs/real_seg3 --init default \
    --data nuclei@1=$R/nuclei-consep-train --class-map $R/nuclei-consep-train=consep \
    --data nuclei@0.6=$R/nuclei-monuseg-train --data nuclei@0.15=phantom/train/nuclei \
    --data gland@1=$R/gland-glas-train --data gland@0.15=phantom/train/gland \
    --data lumen=phantom/train/lumen --data tissue=phantom/train/tissue \
    --steps 1500 --lr 3e-4 --lr-drop-at 1150 --batch-size 4 --tissue-batch-size 16 --patch 256 \
    --sampler fixed --tissue-prob 0.05 --task-probs nuclei=0.5,gland=0.4,lumen=0.1 \
    --scale-augment 0.2 --stain-augment 0.3 --blur-augment 0.3 \
    --workers 1 --threads 2 --val-every 1500 --val-limit 10 --checkpoint-every 50 --log-every 10 \
    --seed 29 --no-progress

# Stage real_tissue3 (record: real_tissue3/): the tissue-type head alone on real_seg3's frozen
# encoder.
cerberus train -o runs/real_tissue3 --subtype tissue --init runs/real_seg3/checkpoints/last.pt \
    --data tissue=phantom/train/tissue --val-data tissue=phantom/val/tissue --steps 500 --lr-drop-at 400 \
    --batch-size 16 --tissue-patch 144 --workers 1 --threads 2 --val-every 500 --val-limit 27 \
    --checkpoint-every 100 --log-every 20 --seed 30 --no-progress

# Export (int8, the weights' terms and the gland calibration in the file), phantom figures of
# the shipped file (real_seg and real_seg2 are the records of model-training/):
python model-training/export_model.py --name default --licence real phantom/val phantom/test \
    model-training/real_seg model-training/real_seg2 runs/real_seg3 runs/real_tissue3 \
    --tissue-test phantom/tissue_test --postprocess gland_threshold=0.5 \
    --postprocess gland_min_size_px=3000 --postprocess gland_kernel_px=15

# The previous release of this model (sha256 ff80c6f9...) ended after real_seg with two
# head-only stages instead (records: real_lumen/, real_tissue/): the lumen decoder, then the
# tissue head, alone on real_seg's frozen encoder and bridge.
cerberus train -o runs/real_lumen --init runs/real_seg/checkpoints/last.pt --freeze-encoder --tasks lumen \
    --data lumen=phantom/train/lumen --val-data lumen=phantom/val/lumen --steps 250 --lr 3e-4 --lr-drop-at 200 \
    --lr-drop-to 5e-5 --batch-size 4 --patch 256 --sampler fixed --blur-augment 0.6 --workers 1 --threads 2 \
    --val-every 250 --val-limit 12 --checkpoint-every 50 --log-every 10 --seed 27 --no-progress
cerberus train -o runs/real_tissue --subtype tissue --init runs/real_lumen/checkpoints/last.pt \
    --data tissue=phantom/train/tissue --val-data tissue=phantom/val/tissue --steps 500 --lr-drop-at 400 \
    --batch-size 16 --tissue-patch 144 --workers 1 --threads 2 --val-every 500 --val-limit 27 \
    --checkpoint-every 100 --log-every 20 --seed 28 --no-progress
# Real-tissue figures of models/default.md (CoNSeP test, GlaS test A, the real crops, the
# real Aperio slide), and the same for the phantom model:
model-training/real_eval.sh default real_eval/default
model-training/real_eval.sh phantom real_eval/phantom
# Phantom slide (the demo's): segment and score as in "Whole-slide and real-H&E figures".
cerberus synth slide s05.svs --size 1536x1536 --seed 3
cerberus segment s05.svs -o out_s05
for t in nuclei gland lumen; do
  cerberus evaluate --task $t -m pq --true s05.truth.parquet --pred out_s05/s05.parquet -o s05.$t.json
done

# Nuclei post-processing variants on the previous release's maps of CoNSeP train
# (models/default.md, "Where it falls short"; that release is default.pt at its sha256
# ff80c6f9..., in the git history):
cerberus segment $R/nuclei-consep-train/images --mpp 0.25 --tissue-method all --save-maps --no-overlay \
    -o consep_train_maps
python model-training/nuclei_pp_sweep.py consep_train_maps $R/nuclei-consep-train/instances
