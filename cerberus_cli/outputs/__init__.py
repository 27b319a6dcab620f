"""Output files: object records (from ``core.records``) to files other tools open.

Knows nothing of torch, slides or post-processing.

- :mod:`.options`: :class:`~.options.WriterOptions` (GeoJSON precision, lumina layout,
  point nuclei, row-group size), nested in the segment options
- :mod:`.object_files`: the object writer for a path's suffix; ``write_objects``
- :mod:`.geoparquet`: streaming GeoParquet 1.1 writer (Hilbert-ordered row groups)
- :mod:`.geojson`: streaming QuPath GeoJSON writer (optionally gzipped); :mod:`.cells`:
  cell boundaries grown from nuclei (``--nuclei-as cell``)
- :mod:`.spatial`: Hilbert keys of object boxes, for the row-group order
- :mod:`.read`: ``read_objects`` for either format; :mod:`.frame`: records to a GeoDataFrame
- :mod:`.omezarr`: OME-Zarr 0.5 images and label images; :mod:`.tissue_map`: the tissue map
- :mod:`.tissue_mask`: the tissue-detection mask as PNG and polygons
- :mod:`.overlay`: QC overlay PNG (outlines, tile grid, mask outline, legend)
"""
