"""Whole-slide reading: readers, resolution handling, tissue masks.

``open_slide`` gives a :class:`Slide` (OpenSlide, tiffslide or plain-image
backend, RGB uint8 whatever the file); ``read_scaled`` reads any region at any
um/px; ``detect_tissue`` / ``load_mask`` say where the tissue is.

- :mod:`.slide`: :class:`Slide`, one opened slide whatever reader is behind it
- :mod:`.backends`: the three readers (OpenSlide, tiffslide, plain image) behind one interface
- :mod:`.sniff`: a readable file, and its format from its first bytes
- :mod:`.resolution`: a slide's um/px from its metadata
- :mod:`.scale`: regions read on a grid of any um/px (the segmentation hot path), thumbnails
- :mod:`.tissue`: tissue detection on a thumbnail; :mod:`.tissue_options`: its options
- :mod:`.masks`: user-supplied tissue masks (raster images or GeoJSON polygons)
- :mod:`.stain_norm`: stain normalisation of H&E tiles to a reference (Macenko, Reinhard)
- :mod:`.writer`: pyramidal whole-slide TIFF files that OpenSlide, tiffslide and QuPath open
"""

from cerberus_cli.core.optionspec import BACKENDS
from cerberus_cli.slides.backends import TileReadError
from cerberus_cli.slides.masks import load_mask
from cerberus_cli.slides.scale import best_level, read_scaled, scaled_size, thumbnail
from cerberus_cli.slides.slide import Slide, open_slide, slide_from_array
from cerberus_cli.slides.tissue import TissueMask, detect_tissue, tissue_from_rgb
from cerberus_cli.slides.tissue_options import TissueOptions
from cerberus_cli.slides.writer import write_slide

__all__ = [
    "BACKENDS",
    "Slide",
    "TileReadError",
    "TissueMask",
    "TissueOptions",
    "best_level",
    "detect_tissue",
    "load_mask",
    "open_slide",
    "read_scaled",
    "scaled_size",
    "slide_from_array",
    "thumbnail",
    "tissue_from_rgb",
    "write_slide",
]
