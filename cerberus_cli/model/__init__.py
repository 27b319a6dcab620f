"""The Cerberus network and its files.

- :mod:`.config`: :class:`~.config.ModelConfig` (encoder, stem stride, heads, mpp)
- :mod:`.encoder`: ResNet encoders in plain torch (torchvision parameter names)
- :mod:`.network`: :class:`~.network.CerberusNet` (encoder, bridge, decoders, heads)
- :mod:`.checkpoint`: our checkpoint format (save, load, verify; int8 storage)
- :mod:`.original`, :mod:`.convert`: the original release checkpoint layout and its import
- :mod:`.registry`: ``load_model`` by registry name or file; :mod:`.describe`: model summaries
- :mod:`.device`: the one resolution of ``--device`` and ``--precision``
"""
