"""``tljob backbones rank``: which backbones are worth sweeping, in minutes.

Each candidate backbone runs once, through the inference path (``tljob.rank.extract``: a
Ray Data actor pool), over a stratified subsample of the job's prepared training and
validation images (``tljob.rank.choose``); its pooled features are kept as fingerprinted
shards beside the prepared data (``tljob.data.features``) so a rerun finds them; a linear
probe on them (``tljob.rank.probe``, pure numpy) scores it; its forward pass is timed on the
actors. ``tljob.rank.driver`` runs it all; ``tljob.rank.outputs`` writes the table, the
plot of accuracy against cost and a ``sweep.yaml`` over the top candidates.
"""
