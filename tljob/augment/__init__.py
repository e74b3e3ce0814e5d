"""Random views of training images: numpy and OpenCV only (never Ray, never TensorFlow).

The contract the rest of tljob uses (``tljob.data.stream`` applies it in Ray Data tasks):

- ``keys.image_keys(sha256_hex)`` -> uint64 key per image (the first 16 hex digits of the
  prepared row's content hash), and ``keys.uniforms(seed, epoch, keys, count, stream)`` ->
  (N, count) float64 in [0, 1): counter-based, vectorised draws that depend only on
  (seed, epoch, key, stream), never on batch composition, worker count or retries.
- ``ops``: the augmentation ops, one module each (its config fields, draw, apply, preview
  caption and in-model layer), and the registry, their ordered list.
- ``pipeline.Augmenter(section, out_size, seed)``; ``augmenter(images, keys, epoch)`` maps
  stored uint8 images (each (S, S, 3), any S) to (N, out_size, out_size, 3) uint8 views: the
  geometry ops (random resized crop, ImageDataGenerator's rotation/shift/shear/zoom and the
  flips) composed into one affine matrix per image and warped once with ``cv2.warpAffine``
  (``geometry``; plain resize when nothing is on), then the pixel ops (``photometric``:
  brightness, channel shift, colour jitter, RandAugment and random erasing).
- ``ops.mixing.mix_batch(images, labels, num_classes, mixup_alpha, cutmix_alpha, seed,
  epoch, batch_key)`` -> (uint8 images, float32 (N, num_classes) soft labels summing to 1).
"""

# The ``augment`` config section is composed from the ops' fields, and the ops' modules
# build on the config's base section: the config loads first, so that whichever module is
# imported first, the section finds the registry complete.
import tljob.config  # noqa: F401
