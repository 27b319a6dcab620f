"""Many slides: the runs around the one-slide pipeline of :mod:`cerberus_cli.inference`.

``segment()`` decides in the calling process what to run, then hands every slide to
the same per-slide protocol (claim, staging, commit record, status file), in this
process, on one worker per device or on Ray actors. Nothing here prints.

- :mod:`.runs`: ``segment()`` over many slides: inputs, shard, skip check, dispatch
- :mod:`.outcomes`: what a run reports (``SlideOutcome``, ``RunSummary``, ``RunEvents``),
  the types every runner shares; it imports none of them
- :mod:`.inputs`: which slides a run processes (files, folders, globs, manifests)
- :mod:`.shards`: ``--shard I/N|slurm``, a part of the inputs stable under reruns
- :mod:`.slide_run`: one slide under its claim: recover, skip check, stage, claim check,
  commit, status file
- :mod:`.slide_worker`: ``SlideWorker``, a process serving many slides, and
  ``settle_dead_worker`` for a slide whose worker died
- :mod:`.devices`: one worker process per device (``--devices``); :mod:`.device_list`:
  which devices ``--devices`` names on this machine
- :mod:`.ray_runner`: the slides on the actors of a Ray cluster (``--ray``)
- :mod:`.claims`: one runner at a time per slide (claim files, heartbeats, takeover)
- :mod:`.commit`: the commit protocol, one object per slide: ``SlideCommit`` (begin,
  write record, commit, abort, recover); ``read_commit`` for readers
- :mod:`.slide_outputs`: the file sink: every output of a slide, built in staging
- :mod:`.provenance`: what made the outputs (slide fingerprint, model, result options)
- :mod:`.run_record`: the commit record's standard sections (versions, peak memory)
- :mod:`.status`: per-slide status files and the summary of ``cerberus status``
- :mod:`.rerun`: a slide and its options rebuilt from a commit record (``--rerun``)
- :mod:`.doctor`: ``cerberus doctor``: versions, devices, slide readers, the output folder
"""
