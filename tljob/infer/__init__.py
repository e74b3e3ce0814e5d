"""Inference with an exported model, on the workers: the one path every scoring takes.

``pipeline.infer`` (Ray Data, never TensorFlow in the calling process) reads its inputs,
a prepared split's shards (``inputs.PreparedSplit``) or any source (folder, manifest,
``s3://`` prefix, one image: ``inputs.list_inputs``), decodes them in Ray Data tasks and
runs the model in an actor pool (one model load per actor; GPU actors on a cluster with
GPUs). ``pipeline.collect`` brings the results to the driver as numpy (``results.Scored``);
``pipeline.score_prepared`` is the end-of-run re-check of a run's validation split.
``predict.run_predict`` is ``tljob predict``: the results written in resumable parts
(``parts``), and the pseudo-label manifest.

Pure (no Ray, no TensorFlow): ``model_file`` (a run directory or ``.keras`` file -> the
model's URI, class names and input size, read from the file without TensorFlow),
``inputs``, ``results``, ``parts``. Ray, never TensorFlow: ``pipeline``, ``predict``;
TensorFlow is imported only inside the actors (``pipeline.Predictor``). Importing
``tljob.infer`` imports nothing heavy.
"""
