"""A list of sources in ``data.source``, merged into one ``ImageListing``. Pure (no Ray, no
TensorFlow, no reads: ``tljob.data.sources`` lists each source first).

Each source (a folder of class folders, a ``uri,label`` manifest, local or ``s3://``) is
listed whole, as one source is, and the listings are merged in the order written:

* the classes are ``data.classes`` when set (images of other classes are quarantined as
  ``unknown_label``; a class no source holds is refused), else the sorted union of every
  source's classes. Names that differ only in case across sources are refused;
* a uri is one image, with the label of the first source that lists it. A later source
  listing it under the same class is a duplicate of it (``listed_again``: counted, never
  read twice); under another class, that entry is quarantined as a ``label_conflict``
  naming both sources and both labels, and the first source's label is kept. So list the
  source whose labels are trusted most (the hand-labelled images) first;
* byte-identical files at different uris are set aside by ``listing.check_listing`` after
  the read, as within one source (duplicates, or label conflicts across classes);
* what each source set aside at listing (manifest rows) is kept; a class none of whose
  entries is left to read is refused before any read, as for one source;
* ``data.max_images_per_class`` applies to the merged classes: the first images of each in
  sorted uri order; later sources' entries of the images past it are not listed either.

The merged listing records each source's URI in order (``ImageListing.sources``), which the
prepared data's fingerprint covers with the listing.
"""

from __future__ import annotations

from collections.abc import Sequence

from tljob import storage
from tljob.data.listing import (
    DataError,
    ImageListing,
    count_reasons,
    no_image_left_error,
    refuse_case_variants,
)

FIELD = "data.source"


def source_name(index: int, source: str) -> str:
    """How messages name one source of the list: ```data.source[1]` ('pseudo.csv')``."""
    return f"`{FIELD}[{index}]` ({source!r})"


def merge_listings(
    sources: Sequence[str],
    listings: Sequence[ImageListing],
    classes: list[str] | None = None,
    max_per_class: int | None = None,
) -> ImageListing:
    """The listing of the sources ``sources`` (as written; ``listings``: each one's whole
    listing, in the same order), merged as the module docstring says. ``DataError`` (exit
    2) for class names that clash, a ``classes`` entry no source holds, fewer than two
    classes, or a class with nothing left to read."""
    shown = list(sources)
    union = sorted({name for listing in listings for name in listing.classes})
    refuse_case_variants(
        [*union, *(classes or [])],
        f"`{FIELD}` ({shown!r}): the classes of its sources"
        + (" and `data.classes`" if classes else ""),
    )
    if classes:
        missing = [c for c in classes if c not in union]
        if missing:
            raise DataError(
                f"`data.classes` names {', '.join(map(repr, missing))}, but no source of "
                f"`{FIELD}` ({shown!r}) has such a class (they have "
                f"{', '.join(map(repr, union))})"
            )
    names = list(classes) if classes else union
    # The first source listing a uri gives its class; images past max_per_class are dropped.
    first: dict[str, tuple[int, str]] = {}
    for index, listing in enumerate(listings):
        for name in listing.classes:
            for uri in listing.files.get(name, []):
                first.setdefault(uri, (index, name))
    by_class: dict[str, list[str]] = {}
    for uri, (_, name) in first.items():
        by_class.setdefault(name, []).append(uri)
    kept = {name: sorted(uris)[:max_per_class] for name, uris in by_class.items()}
    listed = {uri for uris in kept.values() for uri in uris}

    quarantined: list[dict[str, str]] = []
    per_class: dict[str, list[str]] = {}
    listed_again: list[dict[str, str]] = []

    def set_aside(name: str, path: str, reason: str) -> None:
        quarantined.append({"path": path, "reason": reason})
        if name in names:
            per_class.setdefault(name, []).append(reason)

    for name, uris in kept.items():
        if name not in names:
            for uri in uris:
                set_aside(name, uri, f"unknown_label: {name!r} is not one of `data.classes`")
    for index, listing in enumerate(listings):
        for name in listing.classes:
            for uri in listing.files.get(name, []):
                earlier, label = first[uri]
                if earlier == index or uri not in listed:
                    continue
                if label != name:
                    reason = (
                        f"label_conflict: {source_name(index, sources[index])} lists this uri "
                        f"as {name!r}, {source_name(earlier, sources[earlier])} as {label!r} "
                        "(the earlier source's label is used)"
                    )
                    set_aside(name, uri, reason)
                elif label not in names:
                    set_aside(name, uri, f"unknown_label: {name!r} is not one of `data.classes`")
                else:
                    listed_again.append({"path": uri, "duplicate_of": uri})
        quarantined += listing.quarantined
        for name, reasons in listing.quarantined_per_class.items():
            if name in names:
                per_class.setdefault(name, []).extend(reasons)

    files = {name: kept.get(name, []) for name in names}
    _refuse_empty_classes(shown, names, files, per_class)
    return ImageListing(
        classes=names,
        files=files,
        skipped=sorted(
            (s for listing in listings for s in listing.skipped), key=lambda s: s["path"]
        ),
        quarantined=sorted(quarantined, key=lambda q: (q["path"], q["reason"])),
        quarantined_per_class={name: per_class[name] for name in sorted(per_class)},
        stats={uri: st for listing in listings for uri, st in listing.stats.items()},
        sources=[storage.resolve(source).uri for source in sources],
        listed_again=sorted(listed_again, key=lambda d: d["path"]),
    )


def _refuse_empty_classes(
    shown: list[str],
    names: list[str],
    files: dict[str, list[str]],
    per_class: dict[str, list[str]],
) -> None:
    """Fewer than two classes, or a class with no file to read, is refused before any read."""
    if len(names) < 2:
        raise DataError(
            f"`{FIELD}` ({shown!r}): its sources hold {len(names)} class(es) together "
            f"({', '.join(map(repr, names))}); classification needs at least two"
        )
    described = {}
    for name in names:
        if not files[name]:
            reasons = per_class.get(name, [])
            described[name] = (
                f"all {len(reasons)} of its entries were set aside at listing "
                f"({count_reasons(reasons)})"
                if reasons
                else "no source lists an image of it that is left to read"
            )
    if described:
        raise no_image_left_error(shown, described, "No image was read yet", FIELD)
