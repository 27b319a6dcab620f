"""One slide: the segment pipeline, from tiles to objects, knowing nothing of files or runs.

The many-slide runner around it is :mod:`cerberus_cli.cohort`, which this package
never imports (``tests/test_layers.py``).

- :mod:`.options`: :class:`~.options.SegmentOptions` (the flags of ``cerberus segment``)
- :mod:`.tile_plan`: the tile plan; :mod:`.loader`: tile reader workers (damage checks)
- :mod:`.engine`: batched network on a device; :mod:`.mapstore`: chunked map store
- :mod:`.slide_adapt`: fitting ``--stain-norm`` and ``--adapt-bn`` on a slide's own tiles
- :mod:`.pipeline`: :class:`~.pipeline.Segmenter` (tiles -> network -> maps -> objects)
- :mod:`.sinks`: the seam to what receives a slide's results; :mod:`.memory`: results in
  memory (``segment_image``, ``segment_region``)
- :mod:`.multiscale`: saved maps as multiscale OME-Zarr
- :mod:`.describe`: ``slide_info`` (what is in a slide, and what segmenting it costs)
- :mod:`.replay`: the CPU side replayed from saved maps (benchmarks)
"""
