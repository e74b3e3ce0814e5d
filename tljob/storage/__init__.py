"""Where files live: URIs to pyarrow filesystems, whole-file reads and writes, the file walk,
for local paths and ``s3://`` alike. Pure: never imports Ray or TensorFlow.

Every input and output path in tljob goes through ``resolve(uri)``, which returns a
``Location`` (``fs``: a ``pyarrow.fs.FileSystem``, ``path`` inside it, ``uri``); code then
uses ``loc.fs`` or the helpers here, and one code path serves both kinds of storage.

The S3 contract (``settings``):

* Non-secret settings (endpoint, region, addressing style, plain http) come from the job's
  ``s3`` section, with the standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_REGION``,
  ...) filling what it leaves empty. The driver calls ``configure(S3Settings.from_config(
  job.s3))``; it puts ``worker_env()`` (``TLJOB_S3``, JSON, no secret) in the Ray
  ``runtime_env``, which every Ray Data task and actor of the job inherits; and it hands
  the same settings to the Train workers in the ``LoopConfig``, where
  ``train_fn_per_worker`` calls ``configure`` again. A process that was never configured
  reads ``TLJOB_S3``, else the AWS variables.
* Credentials never pass through tljob or its config: each process (driver, Ray Data task,
  Train worker) finds its own with the standard AWS chain, in pyarrow and in boto3 alike
  (environment, ``AWS_PROFILE`` shared profile, web identity, instance metadata). The
  filesystem objects hold no keys, so they pickle to Ray without any.
  ``tljob.preflight`` checks, with a Ray task on every node, that workers can reach the
  store as the driver can.
* ``redact`` removes every credential value from a message; storage errors are redacted
  before anyone sees them, and so is every line ``tljob.output`` prints.

Writes (``write_bytes``, ``write_text``, ``put_file``, ``upload_dir``) are atomic on every
filesystem (temporary hidden name, then rename or server-side copy); ``create_exclusive``
uses ``If-None-Match: *`` where the store honours it (``s3api``).
"""

import pyarrow.fs as pafs

from tljob.storage.files import (
    TMP_PREFIX,
    create_exclusive,
    delete_dir,
    delete_file,
    exists,
    is_dir,
    put_file,
    read_bytes,
    read_text,
    upload_dir,
    write_bytes,
    write_stream,
    write_text,
)
from tljob.storage.location import SCHEMES, Location, resolve, s3_filesystem
from tljob.storage.redact import REDACTED, redact
from tljob.storage.settings import (
    S3Settings,
    StorageError,
    configure,
    current_settings,
    worker_env,
)
from tljob.storage.walk import FileWalk, list_files, walk_files


def reset() -> None:
    """Forget the configured settings and every cached filesystem and client: the next
    ``resolve`` starts from the environment again (tests; a process whose credentials or
    environment changed)."""
    from tljob.storage import location, s3api

    configure(None)
    location.forget_filesystems()
    s3api.forget_clients()


__all__ = [
    "REDACTED",
    "SCHEMES",
    "TMP_PREFIX",
    "FileWalk",
    "Location",
    "S3Settings",
    "StorageError",
    "configure",
    "create_exclusive",
    "current_settings",
    "delete_dir",
    "delete_file",
    "exists",
    "is_dir",
    "list_files",
    "pafs",
    "put_file",
    "read_bytes",
    "read_text",
    "redact",
    "reset",
    "resolve",
    "s3_filesystem",
    "upload_dir",
    "walk_files",
    "worker_env",
    "write_bytes",
    "write_stream",
    "write_text",
]
