"""Transfer learning: the encoder's features for new tasks, and how well they transfer.

Package map (one job per module)::

    table.py        the patch table (CSV/TSV/Parquet or image-folder tree), checked
    patch_sources.py  annotated instance layouts: images, objects, grade / organ tables
    patch_tasks.py  ``make_patches()``: real patch tasks (nucleus type, gland grade, organ)
    patches.py      reading a table's patches at the model's mpp (worker processes)
    loaded_encoder.py  an encoder loaded from any source (model, plain state dict of a
                    registered kind, random baseline), run to maps at named levels
    decoder_levels.py  decoder levels (HEAD.STAGE) as feature levels; default levels
    pooling.py      global (avg, avg+max) and masked (per-object) pooling
    forward.py      batches of patches -> pooled, concatenated feature vectors
    featurefile.py  Parquet feature files with provenance metadata, atomic write
    extractor.py    what every features run shares: encoder on its device, metadata,
                    skip / refuse on existing files, patch rows -> features
    extract.py      ``features()``: patches, or dispatch to grid / objects
    grid.py         grid features over the tissue of whole slides
    objects.py      per-object features under segmented masks (object files of any
                    format), one forward per tile
    options.py      FeaturesOptions, ProbeOptions, ExportOptions
    tuning_options.py  PretrainOptions, FinetuneOptions
    taskdata.py     labelled patch tasks for training, checked and held in memory
    sampling.py     task-balanced batches with flip/rotate augmentation
    pretrain.py     ``pretrain()``: multi-task pre-training of one encoder (Mormont et al.)
    finetune.py     ``finetune()``: a new head on a transferred encoder, chosen on validation
    multitask.py    the multi-task network of pretrain: one encoder, one linear head per task
    finetune_heads.py  an encoder with a new classification head, for finetune
    metrics.py      accuracy, balanced accuracy, macro F1, ROC AUC; group bootstrap
    protocol.py     the probe protocol on one data set: grouped k-fold selection, refit, test
    probe.py        ``probe()``: grouped-CV model selection, seeds, report
    probe_store.py  saving / loading a fitted probe (skops), ``predict()``
    export.py       the encoder in torchvision key layout with a JSON sidecar

Data flow: (patch_sources -> patch_tasks ->) table -> patches -> forward -> featurefile
-> probe -> report / probe_store.
"""
