"""Former name of :mod:`cerberus_cli.transfer.loaded_encoder`, kept only for the modules
that still import it from here (``pretrain``, ``finetune``); new code imports
``loaded_encoder``."""

from __future__ import annotations

from cerberus_cli.transfer.loaded_encoder import Encoder as Encoder
from cerberus_cli.transfer.loaded_encoder import load_encoder as load_encoder
