"""Session fixtures shared by the test modules: a real slide, a phantom slide, a tiny model.

Test modules never import each other; helpers that are not fixtures live in the
``tests/_*.py`` modules (test data writers) or in the library (``cerberus_cli.synthetic``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests._slide_fixtures import REAL_SLIDE

#: Side of the session phantom slide, px at 0.5 um/px.
PHANTOM_SIZE = 640


@pytest.fixture(scope="session")
def real_slide() -> Path:
    """The real Aperio slide shipped in tests/data (2220 x 2967 px, 0.499 um/px)."""
    return REAL_SLIDE


@pytest.fixture(scope="session")
def phantom_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 640 px phantom SVS (seed 5) with its exact truth files beside it."""
    from cerberus_cli.synthetic.slide import write_phantom_slide

    path = tmp_path_factory.mktemp("phantom") / "phantom.svs"
    write_phantom_slide(path, (PHANTOM_SIZE, PHANTOM_SIZE), seed=5)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised light model (ResNet18, stem stride 2, all six heads) as a file."""
    from cerberus_cli.model.checkpoint import save_checkpoint
    from cerberus_cli.model.config import light_config
    from cerberus_cli.model.network import CerberusNet

    torch.manual_seed(0)
    model = CerberusNet(light_config()).eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("model") / "tiny.pt")
