"""``tljob predict``'s output: parts, the plan that names them, the summary, the
pseudo-label manifest. Pure (pyarrow and ``tljob.storage``; no Ray, no TensorFlow).

The sorted inputs (``inputs.InputListing``) are cut into parts of ``part_size``: part ``i``
holds inputs ``i * part_size`` up to the next part's first, in ``part-0000i.parquet`` (or
``.csv``), rows sorted by uri::

    uri, label_1, probability_1, ..., label_k, probability_k, error

``label_j`` is the j-th most probable class name; an input that could not be scored has
its reason in ``error`` and nothing in the label and probability columns. Every part is
written whole or not at all (``storage.write_bytes``: a temporary name, then a rename or a
server-side copy), so a part file that exists is complete. ``_predict.json``, written
before the first part, records what the parts are predictions of (the inputs' fingerprint,
the model file, k, the format, the part size): a rerun into the same folder that agrees
skips the parts already there and writes the rest; one that disagrees is refused (exit 2),
so parts of two different runs never mix. ``_SUCCESS.json`` (the counts) is written last.
Files whose names start with ``_`` or ``.`` are not data to pyarrow and Spark readers, so
``pq.read_table(out)`` reads the predictions alone.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tljob import storage
from tljob.errors import JobFailedError, UserError

PLAN_FILE = "_predict.json"
SUCCESS_FILE = "_SUCCESS.json"
FORMATS = ("parquet", "csv")


class OutputError(UserError):
    """``--out`` holds something a rerun must not mix with; the message says what."""


@dataclass(frozen=True)
class PartPlan:
    """What the parts in one output folder are: ``_predict.json``."""

    inputs: int
    inputs_sha256: str
    part_size: int
    top_k: int
    format: str
    model: dict[str, Any]  # ModelFile.identity()
    source: str

    @property
    def parts(self) -> int:
        return -(-self.inputs // self.part_size)

    def name(self, index: int) -> str:
        return f"part-{index:05d}.{self.format}"

    def bounds(self, index: int) -> tuple[int, int]:
        """The inputs of part ``index``: [start, stop) in the sorted listing."""
        start = index * self.part_size
        return start, min(start + self.part_size, self.inputs)

    def rows_of(self, index: int) -> int:
        start, stop = self.bounds(index)
        return stop - start

    def record(self) -> str:
        return json.dumps({**asdict(self), "parts": self.parts}, indent=1, sort_keys=True)


# What a rerun may change without changing a single row (where the inputs came from is
# their fingerprint's business: the same images under another spelling of the source).
_MAY_DIFFER = ("source",)


def claim(out: storage.Location, plan: PartPlan) -> list[int]:
    """Write ``plan`` into ``out`` or check it against the one there; return the indices
    of the parts already complete. ``OutputError`` when ``out`` holds another run's."""
    if storage.exists(out) and not storage.is_dir(out):
        raise OutputError(f"--out {out.uri} is a file; give a folder (or prefix) for the parts")
    recorded = out.join(PLAN_FILE)
    if storage.exists(recorded):
        before = json.loads(storage.read_text(recorded))
        now = json.loads(plan.record())
        differ = sorted(k for k in now if k not in _MAY_DIFFER and before.get(k) != now[k])
        if differ:
            shown = "; ".join(f"{k}: {before.get(k)!r} then, {now[k]!r} now" for k in differ)
            raise OutputError(
                f"--out {out.uri} holds the predictions of another request ({shown}); "
                "give a new --out, or delete that folder to start over"
            )
    elif storage.is_dir(out) and any(_part_files(out)):
        raise OutputError(
            f"--out {out.uri} holds part files but no {PLAN_FILE}; give a new --out, or "
            "delete that folder"
        )
    else:
        storage.write_text(recorded, plan.record())
    names = {plan.name(i): i for i in range(plan.parts)}
    return sorted(names[n] for n in _part_files(out) if n in names)


def _part_files(out: storage.Location) -> list[str]:
    """Names of the files directly in ``out`` that look like parts."""
    if not storage.is_dir(out):
        return []
    infos = out.fs.get_file_info(storage.pafs.FileSelector(out.path))
    names = [i.path.rsplit("/", 1)[-1] for i in infos if i.type == storage.pafs.FileType.File]
    return sorted(n for n in names if n.startswith("part-"))


def leftover_temporaries(out: storage.Location) -> list[storage.Location]:
    """Temporary part files a killed run left in ``out`` (never read as data)."""
    if not storage.is_dir(out):
        return []
    infos = out.fs.get_file_info(storage.pafs.FileSelector(out.path))
    return [
        out.at(i.path)
        for i in infos
        if i.type == storage.pafs.FileType.File
        and i.path.rsplit("/", 1)[-1].startswith(storage.TMP_PREFIX)
    ]


def part_table(
    uris: np.ndarray,
    top_index: np.ndarray,
    top_probability: np.ndarray,
    errors: np.ndarray,
    classes: Sequence[str],
) -> pa.Table:
    """One part's rows, sorted by uri (see the module docstring)."""
    order = np.argsort(uris.astype(str), kind="stable")
    names = np.array([*classes, None], dtype=object)  # index -1: not scored
    columns: dict[str, pa.Array] = {"uri": pa.array(uris[order].astype(str), pa.string())}
    scored = errors[order] == ""
    for j in range(top_index.shape[1]):
        columns[f"label_{j + 1}"] = pa.array(names[top_index[order, j]], pa.string())
        probability = top_probability[order, j].astype(np.float32)
        columns[f"probability_{j + 1}"] = pa.array(probability, pa.float32(), mask=~scored)
    columns["error"] = pa.array(
        [None if ok else str(e) for ok, e in zip(scored, errors[order], strict=True)], pa.string()
    )
    return pa.table(columns)


def write_part(loc: storage.Location, table: pa.Table, fmt: str) -> None:
    """Write one part whole (atomically) as ``fmt``."""
    buf = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, buf)
    else:
        pacsv.write_csv(table, buf)
    storage.write_bytes(loc, buf.getvalue())


def read_part(loc: storage.Location, fmt: str) -> pa.Table:
    """The columns every check needs of one part: uri, label_1, probability_1, error."""
    columns = ["uri", "label_1", "probability_1", "error"]
    if fmt == "parquet":
        return pq.read_table(loc.path, filesystem=loc.fs, columns=columns)
    types = {"uri": pa.string(), "label_1": pa.string(), "probability_1": pa.float32()}
    options = pacsv.ConvertOptions(
        column_types={**types, "error": pa.string()},
        include_columns=columns,
        strings_can_be_null=True,
    )
    return pacsv.read_csv(io.BytesIO(storage.read_bytes(loc)), convert_options=options)


def check_rows(rows: pa.Table, uris: Sequence[str], out_uri: str) -> None:
    """Every input exactly once in the parts (``rows``), or ``JobFailedError`` (exit 1: a
    bug, or someone else's files written into ``out``) naming what is missing or repeated."""
    found = Counter(rows.column("uri").to_pylist())
    repeated = sorted(u for u, n in found.items() if n > 1)
    missing = sorted(set(uris) - set(found))
    extra = sorted(set(found) - set(uris))
    if repeated or missing or extra:
        raise JobFailedError(
            f"the parts in {out_uri} do not hold each input exactly once: "
            f"{len(missing)} missing {missing[:3]}, {len(repeated)} repeated {repeated[:3]}, "
            f"{len(extra)} not an input {extra[:3]}; delete the folder and predict again"
        )


def counts(rows: pa.Table) -> dict[str, Any]:
    """inputs = predicted + unreadable, and the reasons by kind."""
    errors = [e for e in rows.column("error").to_pylist() if e]
    reasons = Counter(e.split(":", 1)[0] for e in errors)
    return {
        "inputs": rows.num_rows,
        "predicted": rows.num_rows - len(errors),
        "unreadable": len(errors),
        "unreadable_reasons": dict(sorted(reasons.items())),
    }


def pseudo_labels(rows: pa.Table, min_confidence: float) -> list[tuple[str, str]]:
    """(uri, top-1 class) of every scored row whose top-1 probability is at least
    ``min_confidence``, sorted by uri."""
    chosen = [
        (uri, label)
        for uri, label, p, error in zip(
            rows.column("uri").to_pylist(),
            rows.column("label_1").to_pylist(),
            rows.column("probability_1").to_pylist(),
            rows.column("error").to_pylist(),
            strict=True,
        )
        if not error and p is not None and p >= min_confidence
    ]
    return sorted(chosen)


def manifest_csv(rows: Sequence[tuple[str, str]]) -> str:
    """A ``uri,label`` manifest as ``data.source`` reads it (absolute uris)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["uri", "label"])
    writer.writerows(rows)
    return buf.getvalue()
