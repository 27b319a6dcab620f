"""The Cerberus network and its files.

- :mod:`.config`: :class:`~.config.ModelConfig` (encoder, stem stride, heads, mpp; the
  decoder's channel plan)
- :mod:`.encoder_protocol`: what every encoder is (levels, strides, channels) and what a
  kind of encoder provides; :mod:`.encoder`: the registry of encoder kinds and the one
  list of encoder names; :mod:`.resnet`: the ResNet kind in plain torch (torchvision
  parameter names). A new ResNet depth is one line in ``resnet.RESNETS``; a new kind of
  encoder is one module plus one line in ``encoder.KINDS``.
- :mod:`.network`: :class:`~.network.CerberusNet` (encoder, bridge, decoders, heads)
- :mod:`.classifier`: fine-tuned classifier heads applied as a dense tissue-kind head
- :mod:`.checkpoint`: our checkpoint format (save, load, verify; int8 storage)
- :mod:`.original`, :mod:`.convert`: the original release checkpoint layout and its import
- :mod:`.registry`: ``load_model`` by registry name or file; :mod:`.describe`: model summaries
- :mod:`.device`: the one resolution of ``--device`` and ``--precision``
- :mod:`.bn_adapt`: batch-norm statistics re-estimated on target data
- :mod:`.fold`: batch-norm folded into convolutions; :mod:`.quantize`: int8 CPU inference
"""
