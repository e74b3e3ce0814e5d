"""Input images: which files, which class, which split, and how they reach the workers.

``listing`` (pure: paths, scan results and the seeded split; no Ray, no TensorFlow) lists
``<source>/<class>/**/<image>``, decides which files are usable, duplicates or quarantined,
and splits them. ``pipeline`` runs the decode + sha256 scan and the per-epoch decode/resize
stream on Ray Data. The package may import ``tljob.storage``, ``tljob.images``,
``tljob.report``, ``tljob.config`` and Ray; never TensorFlow (the workers turn the Ray Data
shards into ``tf.data`` themselves). Importing ``tljob.data`` itself imports nothing heavy.
"""
