"""One round of self-training's second command, on the session's Ray at a tiny size: a
train run whose ``data.source`` is a folder of labelled images and a pseudo-label manifest
as ``tljob predict --as-manifest`` writes it (``infer.parts.manifest_csv``: absolute uris).
Every listed entry is counted once (the rules without Ray: ``test_source_list.py``)."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from conftest import write_digits_tree

from tljob.infer.parts import manifest_csv

pytestmark = pytest.mark.ray


def test_a_run_trains_on_a_folder_and_a_pseudo_label_manifest(tmp_path, ray_connected):
    from tljob.cli import main

    labelled = write_digits_tree(tmp_path / "labelled", classes=3, per_class=6)
    unlabelled = write_digits_tree(tmp_path / "unlabelled", classes=3, per_class=9)
    for c in range(3):  # keep the 3 images of each class the labelled folder does not hold
        for path in sorted((unlabelled / f"digit_{c}").iterdir())[:6]:
            path.unlink()
    same = sorted((labelled / "digit_1").iterdir())[0]
    other = sorted((labelled / "digit_2").iterdir())[0]
    copy = unlabelled / "copy_of_digit_0.png"
    shutil.copy(sorted((labelled / "digit_0").iterdir())[0], copy)
    rows = [(str(p), f"digit_{c}") for c in range(3)
            for p in sorted((unlabelled / f"digit_{c}").iterdir())]  # fmt: skip
    rows += [(str(same), "digit_1"), (str(other), "digit_0"), (str(copy), "digit_0")]
    pseudo = tmp_path / "pseudo.csv"
    pseudo.write_text(manifest_csv(sorted(rows)))
    config = tmp_path / "job.yaml"
    tree = {
        "data": {
            "source": [str(labelled), str(pseudo)],
            "image_size": 32,
            "val_fraction": 0.25,
            "seed": 1,
        },
        "model": {"backbone": "mobilenet_v3_small", "weights": "none"},
        "train": {
            "batch_size": 4,
            "stages": [{"name": "all", "epochs": 1, "learning_rate": 1e-3, "trainable": "all"}],
        },
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.5},
        "run": {"name": "pseudo", "storage_path": str(tmp_path / "runs")},
    }
    config.write_text(yaml.safe_dump(tree))
    assert main(["train", "--config", str(config)]) == 0

    run_dir = tmp_path / "runs" / "pseudo"
    data = json.loads((run_dir / "summary.json").read_text())["data"]
    # 18 labelled + 12 rows = 30 listed: 27 distinct images (9 a class), the labelled image
    # listed again and the copy duplicates, the other label of a labelled image quarantined
    assert (data["listed"], data["duplicates"], data["quarantined"]) == (30, 2, 1)
    assert {name: split["per_class_used"] for name, split in data["splits"].items()} == {
        "train": {"digit_0": 7, "digit_1": 7, "digit_2": 7},
        "val": {"digit_0": 2, "digit_1": 2, "digit_2": 2},
    }
    assert data["listed"] == 21 + 6 + data["duplicates"] + data["quarantined"]
    assert data["quarantined_reasons"] == {"label_conflict": 1}
    report = json.loads((run_dir / "data_report.json").read_text())
    assert report["quarantined_files"] == [
        {
            "path": str(other),
            "reason": f"label_conflict: `data.source[1]` ({str(pseudo)!r}) lists this uri as "
            f"'digit_0', `data.source[0]` ({str(labelled)!r}) as 'digit_2' (the earlier "
            "source's label is used)",
        }
    ]
    first = str(sorted((labelled / "digit_0").iterdir())[0])
    assert report["duplicate_files"] == [
        {"path": str(same), "duplicate_of": str(same)},
        {"path": str(copy), "duplicate_of": first},
    ]
    labels = json.loads((run_dir / "labels.json").read_text())
    assert labels == {"0": "digit_0", "1": "digit_1", "2": "digit_2"}
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["source"] == [
        str(labelled),
        str(pseudo),
    ]
