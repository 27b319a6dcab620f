"""Objects from network maps: pure array code that knows nothing of slides or torch.

- :mod:`.options`: :class:`~.options.PostprocessOptions` (thresholds, sizes)
- :mod:`.instances`: nuclei (watershed), gland and lumen label maps
- :mod:`.types`: per-object class by majority vote of a type map
- :mod:`.polygons`: label map -> pixel-edge polygons with holes
- :mod:`.chunks`: chunked processing with ownership, deterministic UUIDs, records
- :mod:`.tissue_regions`: connected regions of one class of the tissue map, as records
"""
