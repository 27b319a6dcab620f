"""Synthetic H&E colon tissue ("phantoms") with exact labels for every task.

The tissue is built label-first at 0.5 um/px: tissue-type regions and the glass
edge from seeded coarse fields, glands (crypts, tumour glands) with one lumen
each, a surface-epithelium band along the glass, and non-overlapping nuclei of the
six Cerberus classes placed by type and context. The H&E image is then painted
from those labels (Beer-Lambert stain mixing, textures, blur, noise), so every
label is exact. Everything is a pure function of the seed and global position,
which lets whole slides be rendered block by block.

Public API::

    render_tile(size, seed, ...) -> PhantomTile       # one tile and all label maps
    write_tile_dataset(out_dir, count, size, seed)    # `cerberus synth tiles`
    write_phantom_slide(path, (w, h), seed, mpp)              # `cerberus synth slide`
    PhantomWorld(seed).labels(x0, y0, w, h)           # label layers of any window

Modules:

- :mod:`.params`: scene parameters and class ids; :mod:`.noise`: random numbers
  addressed by position; :mod:`.placement`: non-overlapping placement that every
  window computes alike
- :mod:`.fields`: coarse tissue fields (which class is where, where the glass is)
- :mod:`.glands`: crypts and tumour glands with their lumina; :mod:`.nuclei`: nuclei by
  cell type and context
- :mod:`.scene`: the label layers of a window; :mod:`.truth`: its vector ground truth
- :mod:`.stain`: the Beer-Lambert stain model; :mod:`.paint`: H&E painted from labels;
  :mod:`.artefacts`: what lies on the glass (pen, dust, bubbles, the glass edge)
- :mod:`.tiles`: one phantom tile with every label; :mod:`.dataset`: tiles written as
  the training datasets read them; :mod:`.slide`: whole phantom slides and their truth
- :mod:`.nucleus_patches`: patches centred on nuclei, labelled with the nucleus type;
  :mod:`.signet`: signet ring cell patches (:mod:`.signet_options`)
- :mod:`.maps`: synthetic network maps with known objects (post-processing tests)
- :mod:`.options`: the options of ``cerberus synth tiles`` and ``cerberus synth slide``
"""

from cerberus_cli.synthetic.dataset import write_tile_dataset
from cerberus_cli.synthetic.scene import PhantomWorld
from cerberus_cli.synthetic.slide import write_phantom_slide
from cerberus_cli.synthetic.tiles import PhantomTile, render_tile

__all__ = ["PhantomTile", "PhantomWorld", "render_tile", "write_phantom_slide", "write_tile_dataset"]
