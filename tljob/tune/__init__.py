"""Hyperparameter sweeps on Ray Tune: ``tljob tune --config sweep.yaml``.

The sweep file itself (its ``search`` and ``tune`` sections) is ``tljob.config.sweep``.
Here, by responsibility:

- ``driver`` (Ray): ``sweep_driver_fn`` runs a whole sweep: data prepared once, Tune, outputs;
- ``plan`` (Ray): the search space, scheduler, searcher and trials at once;
- ``trial`` (Ray): ``trial_driver_fn``, one trial as an ordinary tljob run;
- ``schedulers`` (Ray): ASHA and median stopping that never stop a trial's last epoch;
- ``outputs`` (Ray): the trials' records, their console lines, the files of a finished sweep;
- ``interrupt`` (pure): Ctrl-C stops Tune after it saved the sweep's state;
- ``results`` (pure): ``trials.csv``, the results table and the best trial;
- ``plot`` (pure, matplotlib): ``sweep.png``.

Nothing is imported here, so the pure modules load without Ray.
"""
