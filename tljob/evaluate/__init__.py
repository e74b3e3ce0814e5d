"""Scoring an exported model on labelled images, without Ray or TensorFlow (pure).

The workers compute probabilities; everything after that lives here and runs on plain numpy
arrays: ``metrics`` (the figures of ``metrics.json``, ``per_class.csv``, ``mistakes.csv``),
``plots`` (``confusion_matrix.png``, ``reliability.png``, ``learning_curves.png``,
``robustness.png``), ``corruptions`` (the fixed corruption registry and ``robustness.csv``)
and ``report`` (``report.md``). Matplotlib is imported only when drawing.
"""
