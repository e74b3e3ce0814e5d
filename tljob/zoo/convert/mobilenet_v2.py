"""torchvision's MobileNetV2 state dict, mapped onto the Keras layers of tljob's
``mobilenet_v2_torchvision`` network (``tljob.nn.torchvision_mobilenet``). Pure: numpy.

The Keras network has the layer names of ``tf_keras.applications.MobileNetV2`` (``Conv1``,
``expanded_conv_*``, ``block_<i>_*``, ``Conv_1``) and the same block layout as torchvision's
``features``: Keras ``expanded_conv`` is ``features.1``, ``block_<i>`` is ``features.<i+1>``,
``Conv_1`` is ``features.18``, ``predictions`` is ``classifier.1``.

Layouts: PyTorch convolution kernels are (out, in, h, w), Keras' (h, w, in, out); a
depthwise kernel (channels, 1, h, w) becomes Keras' (h, w, channels, 1); a Linear weight
(out, in) becomes a Dense kernel (in, out). BatchNorm maps weight, bias, running_mean,
running_var onto gamma, beta, moving_mean, moving_variance (``num_batches_tracked`` has no
Keras counterpart). torchvision's BatchNorm epsilon is 1e-5; the Keras network uses the same.
"""

from __future__ import annotations

import numpy as np

from tljob.zoo.convert.pth import CheckpointError

BATCHNORM_EPSILON = 1e-5  # torch.nn.BatchNorm2d's default, which torchvision's MobileNetV2 keeps
NUM_CLASSES = 1000
# (expansion t, output channels c, repeats n, first stride s), Sandler et al. 2018, table 2
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def block_strides() -> list[tuple[int, int, int]]:
    """(expansion, output channels, stride) of each inverted residual block, in order."""
    blocks = []
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for i in range(n):
            blocks.append((t, c, s if i == 0 else 1))
    return blocks


def _conv(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))  # OIHW -> HWIO


def _depthwise(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(2, 3, 0, 1))  # (C, 1, H, W) -> (H, W, C, 1)


def keras_layer_names(include_top: bool) -> list[str]:
    """Every Keras layer that holds weights, in network order."""
    return list(_mapping(include_top))


def _mapping(include_top: bool) -> dict[str, tuple[str, str]]:
    """Keras layer name -> (kind, torchvision prefix); kind: conv, depthwise, bn, dense."""
    m: dict[str, tuple[str, str]] = {
        "Conv1": ("conv", "features.0.0"),
        "bn_Conv1": ("bn", "features.0.1"),
    }
    for block_id, (t, _, _) in enumerate(block_strides()):
        f = f"features.{block_id + 1}.conv"
        name = f"block_{block_id}_" if block_id else "expanded_conv_"
        if t != 1:
            m[f"{name}expand"] = ("conv", f"{f}.0.0")
            m[f"{name}expand_BN"] = ("bn", f"{f}.0.1")
        dw = 1 if t != 1 else 0  # index of the depthwise ConvBNReLU in ``conv``
        m[f"{name}depthwise"] = ("depthwise", f"{f}.{dw}.0")
        m[f"{name}depthwise_BN"] = ("bn", f"{f}.{dw}.1")
        m[f"{name}project"] = ("conv", f"{f}.{dw + 1}")
        m[f"{name}project_BN"] = ("bn", f"{f}.{dw + 2}")
    m["Conv_1"] = ("conv", "features.18.0")
    m["Conv_1_bn"] = ("bn", "features.18.1")
    if include_top:
        m["predictions"] = ("dense", "classifier.1")
    return m


def keras_weights(state: dict[str, np.ndarray], include_top: bool) -> dict[str, list[np.ndarray]]:
    """The Keras weights of every layer, by layer name, from torchvision's state dict.

    Raises ``CheckpointError`` naming the first tensor that is missing or of another
    shape than MobileNetV2 1.0 has (a checkpoint of another network)."""
    used: set[str] = set()

    def take(key: str, ndim: int) -> np.ndarray:
        if key not in state:
            raise CheckpointError(
                f"tensor {key!r} is missing: not a torchvision MobileNetV2 state dict"
            )
        value = np.asarray(state[key], dtype=np.float32)
        if value.ndim != ndim:
            raise CheckpointError(f"tensor {key!r} has shape {value.shape}, expected {ndim}-d")
        used.add(key)
        return value

    out: dict[str, list[np.ndarray]] = {}
    for layer, (kind, prefix) in _mapping(include_top).items():
        if kind == "conv":
            out[layer] = [_conv(take(f"{prefix}.weight", 4))]
        elif kind == "depthwise":
            out[layer] = [_depthwise(take(f"{prefix}.weight", 4))]
        elif kind == "dense":
            kernel = take(f"{prefix}.weight", 2)
            out[layer] = [np.ascontiguousarray(kernel.T), take(f"{prefix}.bias", 1)]
        else:
            out[layer] = [
                take(f"{prefix}.{p}", 1) for p in ("weight", "bias", "running_mean", "running_var")
            ]
    return out
