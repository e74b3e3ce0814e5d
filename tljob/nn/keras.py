"""The one place tljob imports ``tf_keras`` (the Keras 2 API).

Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy`` and Ray's TensorFlow backend
sets ``TF_USE_LEGACY_KERAS=1`` on its workers, so tljob uses ``tf_keras`` throughout; every
other module takes it from here (``from tljob.nn.keras import tf_keras``).
"""

import tf_keras

__all__ = ["tf_keras"]
