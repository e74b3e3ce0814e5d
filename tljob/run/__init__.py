"""Running a job on Ray Train: everything between a validated config and a finished run.

Pure (neither Ray nor TensorFlow): ``ledger`` (the epoch row, training state, best-epoch
rule, resume plan, summary), ``lock`` (one run per run directory), ``checkpoint`` (every
checkpoint's layout, writing, reading and completeness; the newest complete one, where a run
resumes, and the removal of incomplete ones), ``attempts`` (each worker-group start: where it
resumed, how far it got; the restart figures), ``timings`` (an epoch's time by phase),
``input_wait`` (the steps' wait for input, the summary's figures and the CPUs to add),
``loop`` (the typed ``LoopConfig`` each worker gets) and ``job`` (validate a job; run it,
importing the Ray side only when called).
``worker`` is the per-worker training loop (Ray + TF, through ``tljob.nn``), ``feed`` its
input (TF) and ``input_clock`` the Keras callback timing its steps; ``driver``
prepares, launches and summarises a run (Ray; TF only to re-check the exported model);
``restart`` is the training dataset as a per-attempt factory (Ray Data);
``progress`` carries rank 0's progress to the driver's live display (Ray + rich).
Importing ``tljob.run`` itself imports nothing heavy.
"""
