"""The bottom layer: facts and primitives every other package builds on.

- :mod:`.errors`: the expected-failure exceptions (one-line messages, exit codes).
- :mod:`.vocabulary`: task names, class lists and colours; :mod:`.class_maps`: a
  dataset's class ids onto cerberus classes (one format for train and evaluate).
- :mod:`.records`: :class:`ObjectRecord`, the unit every writer and reader exchanges,
  and the object ids.
- :mod:`.atomic`: write-then-rename, the one atomic-write primitive.
- :mod:`.optionspec`: typed option fields that the CLI turns into click options;
  :mod:`.run_flags`: the grammar of ``--devices``, ``--ray`` and ``--shard``.
- :mod:`.hashing`: file (and folder) content hashes; :mod:`.processes`: host and pid,
  workers that die with their parent, interrupts held until a safe point, peak memory.

Nothing here imports another cerberus_cli package.
"""
