"""What made a slide's outputs: the slide's fingerprint, the model and every option that
shapes results. The skip check compares it with the committed record; re-runs check it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cerberus_cli.cohort import commit

if TYPE_CHECKING:
    from cerberus_cli.cohort.inputs import SlideInput
    from cerberus_cli.inference.options import SegmentOptions


def slide_provenance(item: SlideInput, options: SegmentOptions, model_sha256: str) -> dict[str, Any]:
    """What made the outputs: the slide's fingerprint, the model, every result-shaping option.

    ``options_all`` (every option, ``mpp`` and the mask's digest filled in) is what the
    skip check compares; it is not recorded itself.
    """
    opts = options.to_dict()
    opts["mpp"] = item.mpp or options.mpp
    if options.mask:
        opts["mask"] = commit.file_digest(Path(options.mask).resolve()) | {
            "path": str(Path(options.mask).resolve())}
    return {"input": commit.input_fingerprint(item.path), "model_sha256": model_sha256,
            "options": commit.result_options(opts), "options_all": opts}
