"""Transfer learning: the encoder's features for new tasks, and how well they transfer.

Package map (one job per module)::

    table.py        the patch table (CSV/TSV/Parquet or image-folder tree), checked
    patch_sources.py  annotated instance layouts: images, objects, grade / organ tables
    patch_tasks.py  ``make_patches()``: real patch tasks (nucleus type, gland grade, organ)
    patches.py      reading a table's patches at the model's mpp (worker processes)
    encoder.py      the encoder as a feature extractor: levels, loading, random baseline
    pooling.py      global (avg, avg+max) and masked (per-object) pooling
    forward.py      batches of patches -> pooled, concatenated feature vectors
    featurefile.py  Parquet feature files with provenance metadata, atomic write
    extract.py      ``features()``: patches; skip / refuse on existing files
    grid.py         grid features over the tissue of whole slides
    objects.py      per-object features under segmented masks, one forward per tile
    options.py      FeaturesOptions, ProbeOptions, ExportOptions
    metrics.py      accuracy, balanced accuracy, macro F1, ROC AUC; group bootstrap
    probe.py        ``probe()``: grouped-CV model selection, seeds, report
    probe_store.py  saving / loading a fitted probe (skops), ``predict()``
    export.py       the encoder in torchvision key layout with a JSON sidecar

Data flow: (patch_sources -> patch_tasks ->) table -> patches -> forward -> featurefile
-> probe -> report / probe_store.
"""
