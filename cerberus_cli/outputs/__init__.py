"""Output files: object records (from ``core.records``) to files other tools open.

Knows nothing of torch, slides or post-processing.

- :mod:`.options`: :class:`~.options.WriterOptions` (GeoJSON precision, lumina layout,
  point nuclei, row-group size), nested in the segment options
- :mod:`.object_formats`: the one table of object formats (name, suffixes, first bytes,
  writer, reader) that every choice of format reads; a new format is one module plus one
  line there
- :mod:`.object_files`: the object writer for a path's suffix; ``write_objects``
- :mod:`.geoparquet`: streaming GeoParquet 1.1 writer (Hilbert-ordered row groups);
  :mod:`.geoparquet_read`: its reader (by row-group statistics for a window)
- :mod:`.geojson`: streaming QuPath GeoJSON writer (optionally gzipped); :mod:`.cells`:
  cell boundaries grown from nuclei (``--nuclei-as cell``); :mod:`.geojson_read`: the
  reader of ours and other tools' (QuPath) GeoJSON
- :mod:`.spatial`: Hilbert keys of object boxes, for the row-group order
- :mod:`.read`: ``read_objects`` for any format (told by first bytes, then suffix);
  :mod:`.frame`: records to a GeoDataFrame and the one table layout readers return
- :mod:`.omezarr`: OME-Zarr 0.5 images and label images; :mod:`.tissue_map`: the tissue map
- :mod:`.tissue_mask`: the tissue-detection mask as PNG and polygons
- :mod:`.overlay`: QC overlay PNG (outlines, tile grid, mask outline, legend)
"""
