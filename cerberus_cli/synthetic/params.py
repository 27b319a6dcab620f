"""Scene parameters of the phantom tissue and the class ids it uses.

Lengths are in pixels at 0.5 um/px (20x), the resolution the world is built at.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Tissue classes: indices into cerberus_cli.model.config.TISSUE_TYPES.
BACK, TUM, NORM, LYM, MUS, STR, DEB, MUC, ADI = range(9)
#: Tissue classes a region can take (background comes from the tissue mask).
REGION_CLASSES = (TUM, NORM, LYM, MUS, STR, DEB, MUC, ADI)

# Nucleus classes: indices into NUCLEUS_TYPES.
NEUTROPHIL, EPITHELIAL, LYMPHOCYTE, PLASMA, EOSINOPHIL, CONNECTIVE = range(1, 7)

# Gland classes: indices into GLAND_TYPES.
GLAND, SURFACE = 1, 2

#: Kinds of gland ring (painting only): normal crypt, tumour gland, surface band.
KIND_NORMAL, KIND_TUMOUR, KIND_SURFACE = 1, 2, 3

BASE_MPP = 0.5


@dataclass(frozen=True)
class SceneParams:
    """What a stretch of phantom tissue looks like.

    - ``region_scale``: size (px) of tissue-type regions; ``region_weights`` biases
      the class of a region (order of :data:`REGION_CLASSES`); ``force_class``
      makes one class (or glass, 0) fill the scene, as for Kather-style patches.
    - ``tissue_scale``, ``tissue_bias``: size of tissue islands and how much of the
      glass they cover (higher bias, more tissue).
    - ``surface_width``: thickness (px) of the surface epithelium along the glass.
    - ``gland_scale``, ``nuclei_density``: multipliers on gland size and cell density.
    - ``stain_jitter``: spread of the per-tile/slide stain variation (0 = reference).
    - ``blur``: range of the optical blur sigma (px); ``jpeg_quality``: range of the
      JPEG round trip of tiles (None: none; slides are JPEG-compressed when written).
    - ``pale``: strength (0..1) of pale tissue: thin-section patches where all stain
      is faint, loose (oedematous) stroma, and fat whose cells close along the glass.
      0 keeps the tissue as it always was (the training tiles).
    - ``artefacts``: pen marks, dust, air bubbles and the glass edge on the glass of
      whole slides (never on tissue; they are not part of the truth).
    - ``nucleus_scale``: size multiplier of the nuclei (and cells) outside glands. 1 keeps
      the small nuclei of the colon phantom; real 20x scans show stromal nuclei about
      1.5-2x larger.
    - ``vesicular``: strength (0..1) of real chromatin: nuclei of varying darkness, pale
      (vesicular) nucleoplasm under a darker membrane, chromatin clumps and nucleoli.
    - ``fibre_haem``: strength (0..1) of haematoxylin-tinted, high-contrast wavy collagen
      fibres and eosinophilic strands in the stroma: purple structures that are not nuclei.
    """

    region_scale: float = 420.0
    region_weights: tuple[float, ...] = (0.55, 0.75, 0.05, 0.0, 0.2, -0.25, -0.2, -0.1)
    tissue_scale: float = 700.0
    tissue_bias: float = 0.35
    force_class: int | None = None
    surface_width: float = 30.0
    gland_scale: float = 1.0
    nuclei_density: float = 1.0
    stain_jitter: float = 1.0
    blur: tuple[float, float] = (0.45, 0.9)
    jpeg_quality: tuple[int, int] | None = (75, 95)
    pale: float = 0.0
    artefacts: bool = False
    nucleus_scale: float = 1.0
    vesicular: float = 0.0
    fibre_haem: float = 0.0


#: Segmentation tiles: mostly mucosa and tumour, some glass edges, every class present.
TILE_SCENE = SceneParams()

#: Whole slides: larger regions, tissue islands on glass, pale tissue and glass artefacts.
SLIDE_SCENE = SceneParams(region_scale=1400.0, tissue_scale=2600.0, tissue_bias=0.05,
                          region_weights=(0.35, 0.55, 0.1, 0.1, 0.3, -0.15, -0.15, 0.0),
                          jpeg_quality=None, pale=1.0, artefacts=True)

#: Scenes of phantom tile datasets: the colon phantom, per tile a :func:`varied_scene`, or
#: the scene of phantom slides (:data:`SLIDE_SCENE`, to compare tiles with slides).
SCENES = ("colon", "varied", "slide")


def varied_scene(rng: np.random.Generator) -> SceneParams:
    """One tile's scene of the ``varied`` phantoms, drawn from ``rng``.

    Stroma-rich tissue with real-sized nuclei of real chromatin texture, purple fibres,
    loose stroma and stronger stain variation than :data:`TILE_SCENE`: what the colon
    phantom lacks against real H&E of other organs.
    """
    return SceneParams(region_scale=float(rng.uniform(300.0, 900.0)),
                       region_weights=(0.1, 0.35, 0.0, 0.05, 1.2, -0.4, -0.3, -0.25),
                       tissue_bias=0.6,
                       nuclei_density=float(rng.uniform(0.2, 1.0)),
                       stain_jitter=1.4,
                       blur=(0.6, 1.8),
                       pale=float(rng.uniform(0.0, 1.0)),
                       nucleus_scale=float(rng.uniform(1.3, 2.0)),
                       vesicular=float(rng.uniform(0.4, 1.0)),
                       fibre_haem=float(rng.uniform(0.3, 1.0)))


def tile_scene(scene: str, world: int) -> SceneParams:
    """Scene parameters of the tile of world seed ``world`` in a dataset of ``scene``."""
    if scene == "varied":
        return varied_scene(np.random.default_rng([world, 78]))
    return SLIDE_SCENE if scene == "slide" else TILE_SCENE
