"""Input images: which files, which class, which split, and how they reach the workers.

Pure (no Ray, no TensorFlow): ``listing`` lists ``<source>/<class>/**/<image>`` and decides
which files are usable, duplicates or quarantined; ``split`` splits them; ``sources`` turns
either source layout (folder tree, or a ``uri,label`` manifest read as columns by
``manifest``) into a listing; ``plan`` splits and fingerprints it once; ``prepared`` owns the
fingerprint, ``manifest.json``, ``quarantine.csv`` and publishing of prepared data.
Ray Data: ``shards`` decodes every image once into Parquet shards and streams a split from
them; ``pipeline`` is the data step of a run (reuse the shards, or prepare them).
The package may import ``tljob.storage``, ``tljob.images``, ``tljob.report``,
``tljob.config``, ``tljob.output``, pyarrow and Ray; never TensorFlow (the workers turn the
Ray Data shards into ``tf.data`` themselves). Importing ``tljob.data`` imports nothing heavy.
"""
