"""Class names that differ only in case (or Unicode normalisation) are refused, naming
them, for class folders and manifest labels alike (S3 prefixes: tests/test_storage_s3.py);
real files, no Ray."""

from __future__ import annotations

import shutil

import pytest
from conftest import write_digits_tree, write_manifest

from tljob.data.listing import DataError, list_images
from tljob.data.sources import list_manifest


@pytest.mark.parametrize(
    ("names", "shown"),
    [
        (["Cat", "cat"], "'Cat' and 'cat'"),
        (["CAT", "Cat", "cat"], "'CAT' and 'Cat' and 'cat'"),
        (["STRASSE", "stra\u00dfe"], "'STRASSE' and 'stra\u00dfe'"),
        (
            ["cafe\u0301", "caf\u00e9"],  # decomposed and composed: the same name to a user
            "'cafe\u0301' and 'caf\u00e9' (written 'cafe\\u0301' and 'caf\\xe9')",
        ),
    ],
)
def test_class_folders_that_differ_only_in_case_are_refused_naming_them(tmp_path, names, shown):
    root = write_digits_tree(tmp_path / "d", classes=1, per_class=2)
    for name in names:
        shutil.copytree(root / "digit_0", root / name)
    with pytest.raises(DataError) as err:
        list_images(str(root))
    assert str(err.value) == (
        f"`data.source` ({str(root)!r}): the class folders {shown} differ only in case "
        "(compared after NFC normalisation with str.casefold): they would be trained as "
        "different classes, and a case-insensitive filesystem or store would hold them as "
        "one. Use one spelling for each class: move the images of one into the other"
    )


def test_distinct_class_names_are_not_case_variants(tmp_path):
    root = write_digits_tree(tmp_path / "d", classes=1, per_class=2)
    # a superscript is another name: compatibility forms (NFKC) are not folded
    for name in ("cat", "cats", "Cat_2", "x2", "x\u00b2"):
        shutil.copytree(root / "digit_0", root / name)
    assert list_images(str(root)).classes == ["Cat_2", "cat", "cats", "digit_0", "x2", "x²"]


def test_manifest_labels_that_differ_only_in_case_are_refused_naming_them(tmp_path):
    root = write_digits_tree(tmp_path / "d", classes=2, per_class=3)
    zeros, ones = (sorted((root / f"digit_{c}").iterdir()) for c in (0, 1))
    rows = [(str(p), "cat") for p in zeros[:2]] + [(str(zeros[2]), "Cat")]
    manifest = write_manifest(tmp_path / "m.csv", rows + [(str(p), "dog") for p in ones])
    with pytest.raises(DataError) as err:
        list_manifest(str(manifest))
    assert str(err.value).startswith(
        f"`data.source` ({str(manifest)!r}): the labels 'Cat' and 'cat' differ only in case "
    )
    # with `data.classes`, a label that is a class's name in another case is refused too
    # (not quarantined as unknown_label)
    with pytest.raises(DataError) as err:
        list_manifest(str(manifest), classes=["cat", "dog"])
    assert str(err.value).startswith(
        f"`data.source` ({str(manifest)!r}): the labels and `data.classes` 'Cat' and 'cat' "
        "differ only in case "
    )
