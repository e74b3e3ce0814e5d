"""Running a job on Ray Train: everything between a validated config and a finished run.

``ledger`` (the training state, the epoch row, the best-epoch rule and the resume plan) and
``lock`` (one run per run directory) are pure: they import neither Ray nor TensorFlow.
``checkpoint`` owns the files of a checkpoint and finding the newest complete one on storage
(pure as well). ``worker`` is the per-worker training loop (Ray + TF); ``driver`` prepares,
launches and summarises a run (Ray; TF only to re-check the exported model).
"""
