"""The registry's entries, one module per architecture family, each a tuple ``SPECS`` of
``BackboneSpec``. Figures (``parameters``, ``feature_channels``, ``activations_per_pixel``)
are measured by ``benchmarks/measure_backbones.py``; weight file names, URLs and hashes are those
of the installed ``tf_keras.applications`` sources."""
