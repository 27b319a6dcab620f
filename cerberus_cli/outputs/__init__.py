"""Output files of ``cerberus segment``: object records and their writers.

- :mod:`.records`: :class:`~.records.ObjectRecord`, ``make_record(s)``, object UUIDs
- :mod:`.geoparquet`: streaming GeoParquet 1.1 writer (Hilbert-ordered row groups)
- :mod:`.geojson`: streaming QuPath GeoJSON writer (optionally gzipped)
- :mod:`.read`: ``read_objects`` for either format
- :mod:`.tissue_map`: tissue class map as zarr + PNG, tissue regions as records
- :mod:`.overlay`: QC overlay PNG of outlines over a thumbnail
- :mod:`.atomic`: write-to-temporary-then-rename used by every writer
"""
