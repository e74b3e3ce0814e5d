"""Which files are the images of which class, and which of them can be trusted.

Pure driver-side logic on paths and scan results: no Ray, no TensorFlow, no decoding.

``list_images`` walks ``<source>/<class>/**/<image>`` (``storage.walk_files``: hidden
entries skipped at every depth, each real folder listed once, symlink cycles skipped) and
records every file it does not use in ``ImageListing.skipped`` as ``{path, reason}``:
``hidden``, ``directory_cycle``, ``directory_already_listed``, ``broken_symlink``,
``not_a_regular_file``, ``unreadable_directory``, ``outside_class_folder`` and
``not_an_image_file``.

``check_listing`` takes what the cluster scan found for every listed file (its sha256 and
whether it decodes) and decides, before any train/validation split:

* a file that does not decode, or has no known pixel range, is quarantined;
* byte-identical files in one class: the first path in sorted order is kept, every other
  copy is a duplicate ``{path, duplicate_of}``, so no content can be in both splits;
* byte-identical files in two or more classes are a label conflict: every copy is
  quarantined, with a reason that names the classes.

So every listed file is exactly one of: usable, duplicate, quarantined.

Two class names that differ only in case (``Cat`` and ``cat``) are refused
(``refuse_case_variants``): a case-insensitive store would make them one folder. Names are
compared after NFC normalisation and ``str.casefold`` (``class_name_key``), so composed and
decomposed accents (``caf\\u00e9``, ``cafe\\u0301``, which macOS and Linux may spell
differently) and ``ß``/``SS`` are one name too; compatibility forms that case folding
leaves alone (NFKC: a superscript ``²`` against ``2``) stay distinct names.
A class left with no image to train on after quarantine is refused as an empty class folder
is (``refuse_classes_without_training_images``).
"""

from __future__ import annotations

import posixpath
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tljob import output, storage
from tljob.errors import UserError
from tljob.images import IMAGE_EXTENSIONS

log = output.logger("data")


class DataError(UserError, ValueError):
    """The input data cannot be used; the message names what is wrong and what to do."""


@dataclass
class ImageListing:
    """The images found under a source, by class (class names sorted)."""

    classes: list[str]
    files: dict[str, list[str]]  # class name -> sorted file paths (URIs off local disk)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {path, reason}
    # Listed but set aside before any read: a manifest row whose label is not a class or
    # whose object is missing or a folder ({path, reason}); ``check_listing`` quarantines them.
    quarantined: list[dict[str, str]] = field(default_factory=list)
    # Class -> the reasons of its entries in ``quarantined`` (a manifest row's label), so an
    # error about a class can count them; not part of the fingerprint.
    quarantined_per_class: dict[str, list[str]] = field(default_factory=dict)
    # uri -> (size, mtime_ns or -1) where the listing already learnt them (object-store
    # listings, manifest existence checks): the fingerprint does not look again.
    stats: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Of a list of sources (``tljob.data.merge``; empty for one): their URIs in order, and
    # a later source's entries {path, duplicate_of} (both the uri) of a file listed already.
    sources: list[str] = field(default_factory=list)
    listed_again: list[dict[str, str]] = field(default_factory=list)

    def count(self) -> int:
        """Files to read (``quarantined`` and ``listed_again`` entries are never read)."""
        return sum(len(self.files.get(c, [])) for c in self.classes)

    def listed(self) -> int:
        """Every listed entry: files to read, entries quarantined at listing and entries
        listed again by a later source."""
        return self.count() + len(self.quarantined) + len(self.listed_again)


def list_images(
    source: str,
    max_per_class: int | None = None,
    field: str = "data.source",
    min_classes: int = 2,
) -> ImageListing:
    """List a folder-per-class tree (at most ``max_per_class`` images of each class, the
    first in sorted path order). Raises ``DataError`` for an unusable tree, naming the
    setting ``field``, or when it has fewer than ``min_classes`` class folders."""
    if not source:
        raise DataError(
            f"`{field}` is empty: set it to the folder that holds one "
            "sub-folder of images per class"
        )
    try:
        root = storage.resolve(source)
    except storage.StorageError as e:
        raise DataError(f"`{field}` ({source!r}): {e}") from None
    if not storage.is_dir(root):
        raise DataError(f"`{field}` ({source!r}) is not an existing directory")
    walk = storage.walk_files(root)
    # Class folders are the folders listed directly under the root: hidden ones, cycles and
    # links to a folder listed elsewhere are not (they are in ``walk.skipped``).
    class_dirs = sorted(
        posixpath.basename(d) for d in walk.directories if posixpath.dirname(d) == root.path
    )
    refuse_case_variants(class_dirs, f"`{field}` ({source!r}): the class folders")
    files: dict[str, list[str]] = {}
    # Paths are kept as URIs (the same as paths on local disk), so that any process can
    # ``storage.resolve`` them.
    skipped = [{**s, "path": root.at(s["path"]).uri} for s in walk.skipped]
    stats: dict[str, tuple[int, int]] = {}
    for path in walk.files:
        parts = posixpath.relpath(path, root.path).split("/")
        uri = root.at(path).uri
        if len(parts) < 2:
            skipped.append({"path": uri, "reason": "outside_class_folder"})
        elif not path.lower().endswith(IMAGE_EXTENSIONS):
            skipped.append({"path": uri, "reason": "not_an_image_file"})
        else:
            files.setdefault(parts[0], []).append(uri)
            if path in walk.stats:
                stats[uri] = walk.stats[path]
    if not class_dirs:
        raise DataError(
            f"`{field}` ({source!r}) has no class folders: expected "
            "<source>/<class name>/<image files>"
        )
    empty = [c for c in class_dirs if c not in files]
    if empty:
        raise DataError(
            f"`{field}` ({source!r}): class folder(s) {', '.join(map(repr, empty))} hold "
            f"no image files ({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder"
        )
    if len(class_dirs) < min_classes:
        raise DataError(
            f"`{field}` ({source!r}) has one class ({class_dirs[0]!r}); "
            "classification needs at least two class folders"
        )
    files = {c: sorted(paths)[:max_per_class] for c, paths in files.items()}
    skipped.sort(key=lambda s: s["path"])
    return ImageListing(classes=class_dirs, files=files, skipped=skipped, stats=stats)


@dataclass(frozen=True, slots=True)
class ImageScan:
    """What the cluster scan found for one file (slots: a million are held at once)."""

    sha256: str  # hex digest of the file's bytes; "" when it could not be read
    problem: str  # why it cannot be used ("<kind>: <detail>"); "" when it decodes


@dataclass
class CheckedListing:
    """A listing split into the usable images and the files set aside, with why."""

    usable: ImageListing  # unique, decodable images of every class (sorted paths)
    duplicates: list[dict[str, str]]  # {path, duplicate_of}, sorted by path
    quarantined: list[dict[str, str]]  # {path, reason}, sorted by path


def check_listing(listing: ImageListing, scans: Mapping[str, ImageScan]) -> CheckedListing:
    """Set aside undecodable files, byte-identical copies and label conflicts.

    ``scans`` must hold every path of ``listing``. Every listed path ends up in exactly one
    of ``usable``, ``duplicates`` and ``quarantined`` (``listing.quarantined`` included);
    an entry of ``listing.listed_again`` follows the file it lists again: a duplicate of
    it when it is used, of what it duplicates, or quarantined with its reason.
    """
    quarantined: list[dict[str, str]] = list(listing.quarantined)
    found: list[tuple[str, str, str]] = []  # (sha256, path, class) of the decodable files
    for name in listing.classes:
        for path in listing.files.get(name, []):
            scan = scans[path]
            if scan.problem:
                quarantined.append({"path": path, "reason": scan.problem})
            else:
                found.append((scan.sha256, path, name))
    # Copies are neighbours in hash order: a sort, not a dict of lists per hash (a few
    # hundred MB of the driver's memory at a million files).
    found.sort()
    duplicates: list[dict[str, str]] = []
    kept: set[str] = set()
    start = 0
    while start < len(found):
        end = start + 1
        while end < len(found) and found[end][0] == found[start][0]:
            end += 1
        copies, start = found[start:end], end  # sorted by path within one hash
        classes = sorted({name for _, _, name in copies})
        if len(classes) > 1:
            # The same bytes cannot be two classes: neither label can be trusted.
            reason = "label_conflict: identical bytes are filed under classes " + ", ".join(
                map(repr, classes)
            )
            quarantined += [{"path": path, "reason": reason} for _, path, _ in copies]
            continue
        kept.add(copies[0][1])
        duplicates += [{"path": p, "duplicate_of": copies[0][1]} for _, p, _ in copies[1:]]
    copy_of = {d["path"]: d["duplicate_of"] for d in duplicates}
    reason_of = {q["path"]: q["reason"] for q in quarantined}
    for again in (entry["path"] for entry in listing.listed_again):
        if again in kept or again in copy_of:
            duplicates.append({"path": again, "duplicate_of": copy_of.get(again, again)})
        else:
            quarantined.append({"path": again, "reason": reason_of[again]})
    usable = {
        name: [p for p in listing.files.get(name, []) if p in kept] for name in listing.classes
    }
    return CheckedListing(
        usable=ImageListing(classes=listing.classes, files=usable, skipped=listing.skipped),
        duplicates=sorted(duplicates, key=lambda d: d["path"]),
        quarantined=sorted(quarantined, key=lambda q: q["path"]),
    )


def class_name_key(name: str) -> str:
    """What two class names are compared by: NFC, then ``str.casefold``, then NFC again
    (folding can decompose): ``Cat``, ``CAT`` and ``cat`` give one key, and so do the
    composed and decomposed spellings of an accented name."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def refuse_case_variants(names: Iterable[str], what: str) -> None:
    """Raise ``DataError`` when two of ``names`` differ only in case or Unicode
    normalisation; ``what`` says whose names they are (e.g. "`data.source` (…): the class
    folders"). Every such group is named, each name as written."""
    groups: dict[str, list[str]] = {}
    for name in sorted(set(names)):
        groups.setdefault(class_name_key(name), []).append(name)
    clashes = [group for group in groups.values() if len(group) > 1]
    if not clashes:
        return
    described = "; ".join(_names_as_written(group) for group in clashes)
    raise DataError(
        f"{what} {described} differ only in case (compared after NFC normalisation with "
        "str.casefold): they would be trained as different classes, and a case-insensitive "
        "filesystem or store would hold them as one. Use one spelling for each class: move "
        "the images of one into the other"
    )


def _names_as_written(group: Sequence[str]) -> str:
    text = " and ".join(map(repr, group))
    if len({unicodedata.normalize("NFC", n) for n in group}) < len(group):
        # Composed and decomposed spellings print alike: show their code points too.
        text += " (written " + " and ".join(map(ascii, group)) + ")"
    return text


def count_reasons(reasons: Iterable[str]) -> str:
    """``corrupt_image 3, missing_object 1``: reasons counted by kind (the part before
    the first ':'), in sorted order."""
    counts = Counter(reason.split(":", 1)[0] for reason in reasons)
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))


def refuse_classes_without_training_images(
    source: str | list[str],
    listing: ImageListing,
    train_per_class: Mapping[str, int],
    quarantined: Sequence[Mapping[str, str]],
    duplicates: Sequence[Mapping[str, str]],
    quarantine_uri: str,
) -> None:
    """Raise ``DataError`` when a class of ``listing`` has no training image
    (``train_per_class``), the same refusal as an empty class folder. The message names
    each such class, how many of its images were quarantined and why (counted by kind),
    and ``quarantine_uri``, the file that lists every quarantined image with its reason."""
    empty = [c for c in listing.classes if not train_per_class.get(c, 0)]
    if not empty:
        return
    reason_of = {q["path"]: q["reason"] for q in quarantined}
    duplicate_paths = {d["path"] for d in duplicates}
    described = {}
    for name in empty:
        paths = listing.files.get(name, [])
        reasons = list(listing.quarantined_per_class.get(name, []))
        reasons += [reason_of[p] for p in paths if p in reason_of]
        copies = sum(p in duplicate_paths for p in paths)
        listed = len(paths) + len(listing.quarantined_per_class.get(name, []))
        text = f"{len(reasons)} of its {listed} listed image(s) were quarantined"
        text += f" ({count_reasons(reasons)})" if reasons else ""
        described[name] = text + (f", {copies} were duplicates" if copies else "")
    where = f"Every quarantined image is listed with why in {quarantine_uri}"
    raise no_image_left_error(source, described, where)


def no_image_left_error(
    source: str | list[str], described: Mapping[str, str], where: str, field: str = "data.source"
) -> DataError:
    """The refusal of the classes of ``described`` (class -> what became of its images),
    the same as of an empty class folder; ``where``: a sentence saying where the images
    set aside are listed; ``field``: the setting that names ``source``."""
    names = list(described)
    if len(names) == 1:
        what = f"class {names[0]!r} has no image left to train on: {described[names[0]]}"
    else:
        what = f"classes {', '.join(map(repr, names))} have no image left to train on: " + (
            "; ".join(f"{name!r}: {text}" for name, text in described.items())
        )
    return DataError(
        f"`{field}` ({source!r}): {what}. {where}. Fix or replace those images, or "
        "remove the class (its folder, its manifest rows, or its name in `data.classes`): "
        "a class with no usable image is refused as an empty class folder is"
    )
