"""Segmentation of slides: the pipeline and the runs around it.

- :mod:`.options`: :class:`~.options.SegmentOptions` (the flags of ``cerberus segment``)
- :mod:`.inputs`: which slides a run processes (files, folders, globs, manifests)
- :mod:`.tiles`: the tile plan; :mod:`.loader`: tile reader workers (damage checks)
- :mod:`.engine`: batched network on a device; :mod:`.mapstore`: chunked map store
- :mod:`.pipeline`: :class:`~.pipeline.Segmenter` (tiles -> network -> maps -> objects)
- :mod:`.sinks`: the seam to what receives a slide's results; :mod:`.memory`: in memory
- :mod:`.slide_outputs`: the file sink; :mod:`.multiscale`: saved maps as OME-Zarr
- :mod:`.commit`: the per-slide commit record, staging and swap; :mod:`.run_record`
- :mod:`.runs`: ``segment()`` over many slides; :mod:`.describe`: ``slide_info``
- :mod:`.replay`: the CPU side replayed from saved maps (benchmarks)
"""
