"""tljob.storage on a real S3 server (SeaweedFS on loopback): resolve, whole-file reads and
writes, the walk, atomic writes, create-exclusive, deletes, uploads; and the settings and
redaction rules, which need no server."""

from __future__ import annotations

import threading

import pyarrow.fs as pafs
import pytest

from tljob import storage
from tljob.storage import s3api
from tljob.storage.settings import S3Settings, StorageError

# --- resolve ----------------------------------------------------------------------------------


def test_resolve_s3_gives_the_configured_s3_filesystem_and_bucket_path(s3):
    loc = storage.resolve(f"s3://{s3.bucket}/runs/one/")
    assert isinstance(loc.fs, pafs.S3FileSystem)
    assert (loc.path, loc.uri, loc.bucket, loc.key) == (
        f"{s3.bucket}/runs/one",
        f"s3://{s3.bucket}/runs/one",
        s3.bucket,
        "runs/one",
    )
    assert loc.join("a", "b.json").uri == f"s3://{s3.bucket}/runs/one/a/b.json"
    assert loc.at(f"{s3.bucket}/x/y.png").uri == f"s3://{s3.bucket}/x/y.png"
    assert loc.parent.uri == f"s3://{s3.bucket}/runs"
    assert storage.resolve(s3.uri("runs")).fs is loc.fs  # one filesystem per settings
    bucket_only = storage.resolve(f"s3://{s3.bucket}")
    assert (bucket_only.path, bucket_only.key) == (s3.bucket, "")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://Bad_Bucket/x", "'Bad_Bucket' is not a valid bucket name (3 to 63 lowercase"),
        ("s3://", "'' is not a valid bucket name"),
        ("s3://ab/x", "'ab' is not a valid bucket name"),
        ("s3://bucket/a/../b", "the key has an empty, '.' or '..' part"),
        ("gs://bucket/x", "the gs:// scheme is not supported; use a local path, a file:// URI"),
    ],
)
def test_resolve_refuses_unusable_uris(uri, message):
    with pytest.raises(StorageError) as e:
        storage.resolve(uri)
    assert message in str(e.value)


# --- reads, writes, deletes -------------------------------------------------------------------


def test_write_read_exists_is_dir_and_delete_on_s3(s3):
    loc = storage.resolve(s3.uri("runs", "r1", "summary.json"))
    assert not storage.exists(loc)
    storage.write_text(loc, '{"a": 1}')
    assert storage.read_text(loc) == '{"a": 1}'
    assert storage.exists(loc) and not storage.is_dir(loc)
    assert storage.is_dir(loc.parent)
    storage.write_bytes(loc, b"second")  # replaces
    assert storage.read_bytes(loc) == b"second"
    assert s3.objects() == ["runs/r1/summary.json"]  # no temporary key left behind

    storage.delete_file(loc)
    storage.delete_file(loc)  # already gone: fine
    assert not storage.exists(loc)
    storage.write_text(storage.resolve(s3.uri("runs", "r2", "a", "b.txt")), "x")
    storage.write_text(storage.resolve(s3.uri("runs", "r2", "c.txt")), "y")
    storage.delete_dir(storage.resolve(s3.uri("runs", "r2")))
    storage.delete_dir(storage.resolve(s3.uri("runs", "r2")))  # already gone: fine
    assert s3.objects() == []


def test_a_failed_write_leaves_neither_a_partial_object_nor_a_temporary_key(s3):
    target = storage.resolve(s3.uri("model", "model.keras"))

    def chunks_then_failure():
        yield b"x" * 1000
        raise ConnectionError("the writer died half-way")

    # The hazard is real: a plain pyarrow stream closed after an error completes the upload.
    raw = storage.resolve(s3.uri("raw", "model.keras"))
    with pytest.raises(ConnectionError), raw.fs.open_output_stream(raw.path) as f:
        for chunk in chunks_then_failure():
            f.write(chunk)
    assert raw.fs.get_file_info(raw.path).size == 1000

    with pytest.raises(ConnectionError):
        storage.write_stream(target, chunks_then_failure())
    assert not storage.exists(target)
    assert s3.objects("model") == []

    storage.write_bytes(target, b"v1")
    with pytest.raises(ConnectionError):
        storage.write_stream(target, chunks_then_failure())
    assert storage.read_bytes(target) == b"v1"  # the old file, whole
    assert s3.objects("model") == ["model/model.keras"]


def test_upload_dir_copies_a_tree_atomically_with_last_files_last(s3, tmp_path):
    local = tmp_path / "export"
    (local / "sub").mkdir(parents=True)
    (local / "model.keras").write_bytes(b"m" * 70_000)
    (local / "sub" / "extra.bin").write_bytes(b"e")
    (local / "manifest.json").write_text("{}")
    copied = storage.upload_dir(local, storage.resolve(s3.uri("out")), last=("manifest.json",))
    assert copied == 3
    assert s3.objects("out") == ["out/manifest.json", "out/model.keras", "out/sub/extra.bin"]
    assert storage.read_bytes(storage.resolve(s3.uri("out", "model.keras"))) == b"m" * 70_000
    stamps = {
        k: s3.server.client().head_object(Bucket=s3.bucket, Key=k)["LastModified"]
        for k in s3.objects("out")
    }
    assert stamps["out/manifest.json"] >= max(stamps.values())


# --- the walk ---------------------------------------------------------------------------------


def test_walk_files_on_s3_skips_hidden_keys_at_every_depth(s3):
    for key in [
        "src/cat/1.png",
        "src/cat/deep/2.png",
        "src/cat/.DS_Store",
        "src/cat/.ipynb_checkpoints/3.png",
        "src/cat/.ipynb_checkpoints/4.png",
        "src/dog/5.png",
        "src/.hidden_class/6.png",
        "src/dog/.tljob-tmp-abc-7.png",
        "elsewhere/8.png",
    ]:
        storage.write_bytes(storage.resolve(s3.uri(key)), b"data")
    walk = storage.walk_files(storage.resolve(s3.uri("src")))
    b = s3.bucket
    assert walk.files == [f"{b}/src/cat/1.png", f"{b}/src/cat/deep/2.png", f"{b}/src/dog/5.png"]
    assert walk.skipped == [
        {"path": f"{b}/src/.hidden_class", "reason": "hidden"},
        {"path": f"{b}/src/cat/.DS_Store", "reason": "hidden"},
        {"path": f"{b}/src/cat/.ipynb_checkpoints", "reason": "hidden"},
        {"path": f"{b}/src/dog/.tljob-tmp-abc-7.png", "reason": "hidden"},
    ]
    assert walk.directories == [f"{b}/src", f"{b}/src/cat", f"{b}/src/cat/deep", f"{b}/src/dog"]
    sizes = {path: size for path, (size, _mtime) in walk.stats.items()}
    assert sizes == {path: 4 for path in walk.files}  # from the listing, no HEAD per object
    assert all(mtime > 0 for _size, mtime in walk.stats.values())


def test_the_fingerprint_of_an_s3_listing_looks_at_no_object_again(s3, monkeypatch):
    from tljob.data import sources
    from tljob.data.listing import list_images

    for key, body in [("t/a/1.png", b"x"), ("t/a/2.png", b"yy"), ("t/b/3.png", b"zzz")]:
        storage.write_bytes(storage.resolve(s3.uri(key)), body)
    manifest = "uri,label\na/1.png,a\nb/3.png,b\nb/gone.png,b\n"
    storage.write_text(storage.resolve(s3.uri("t", "m.csv")), manifest)
    folder_listing = list_images(s3.uri("t"))
    manifest_listing = sources.list_manifest(s3.uri("t", "m.csv"))
    looked_at: list[list[str]] = []
    real = sources.stat_objects
    monkeypatch.setattr(
        sources, "stat_objects", lambda uris: looked_at.append(list(uris)) or real([])
    )
    for listing in (folder_listing, manifest_listing):
        uris = [u for c in listing.classes for u in listing.files[c]]
        stats = sources.listing_stats(listing, uris)
        assert (
            {u: st.size for u, st in stats.items()}
            == {
                s3.uri("t/a/1.png"): 1,
                s3.uri("t/a/2.png"): 2,
                s3.uri("t/b/3.png"): 3,
            }
            if listing is folder_listing
            else {s3.uri("t/a/1.png"): 1, s3.uri("t/b/3.png"): 3}
        )
    assert looked_at == [[], []]


# --- create-exclusive -------------------------------------------------------------------------


def test_create_exclusive_on_s3_is_a_conditional_put_with_one_winner(s3):
    loc = storage.resolve(s3.uri("runs", "r", "run.lock"))
    assert s3api.conditional_put_supported(loc) is True  # SeaweedFS honours If-None-Match
    assert storage.create_exclusive(loc, b"first") is True
    assert storage.create_exclusive(loc, b"second") is False
    assert storage.read_bytes(loc) == b"first"

    race = storage.resolve(s3.uri("runs", "race", "run.lock"))
    wins: list[int] = []
    barrier = threading.Barrier(6)

    def contend(i: int) -> None:
        barrier.wait()
        if storage.create_exclusive(race, str(i).encode()):
            wins.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert storage.read_bytes(race) == str(wins[0]).encode()
    assert [k for k in s3.objects() if ".tljob-" in k] == []  # probes cleaned up


def test_the_local_server_holds_a_volume_for_every_bucket_whatever_the_free_disk(s3):
    """Each bucket takes a volume of its own; left to ``weed mini``, the count follows the
    free disk, and the suite's later buckets failed their first write on a fuller disk."""
    import json
    import urllib.request

    from tljob.storage.seaweed import VOLUME_CAPACITY

    url = f"http://127.0.0.1:{s3.server.master_port}/dir/status"
    with urllib.request.urlopen(url, timeout=10) as response:
        topology = json.load(response)["Topology"]
    assert VOLUME_CAPACITY == 1000
    assert topology["Max"] == VOLUME_CAPACITY
    assert topology["Free"] >= VOLUME_CAPACITY - 200  # the suite makes fewer buckets


# --- settings and redaction (no server) --------------------------------------------------------


def test_settings_take_the_config_first_then_the_aws_variables():
    env = {
        "AWS_ENDPOINT_URL": "https://minio.example:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_REGION": "eu-central-1",
    }
    from_env = S3Settings.from_config(None, env)
    assert (from_env.endpoint_url, from_env.region) == (
        "https://minio.example:9000",
        "eu-central-1",
    )
    assert from_env.endpoint_source == "environment variable AWS_ENDPOINT_URL"

    class Section:
        endpoint_url, region, addressing_style, allow_http = (
            "http://127.0.0.1:8333/",
            "local",
            "path",
            True,
        )

    mine = S3Settings.from_config(Section(), env)
    assert (mine.endpoint_url, mine.region, mine.addressing_style) == (
        "http://127.0.0.1:8333",
        "local",
        "path",
    )
    # shipped to Ray processes as one non-secret variable, read back equal
    assert S3Settings.from_env(mine.to_env()) == mine
    assert S3Settings.from_config(None, {}).effective_region is None  # AWS decides
    assert S3Settings(endpoint_url="https://x").effective_region == "us-east-1"


class CountingRefuser:
    """A TCP port that accepts every connection and closes it at once, counting them: an
    S3 endpoint that is there and answers nothing, so every request attempt is one
    connection."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


def test_every_s3_request_is_retried_max_attempts_times_in_every_process_that_unpickles_it():
    """pyarrow's own pickle of an S3 filesystem drops its retry strategy; tljob's pickles
    as its settings, so a Ray Data task or Ray Train's controller retries as the driver."""
    import pickle

    from tljob.storage.location import retry_budget_s, s3_filesystem

    def connections_of_one_request(max_attempts: int) -> int:
        endpoint = CountingRefuser()
        settings = S3Settings(
            endpoint_url=f"http://127.0.0.1:{endpoint.port}",
            allow_http=True,
            max_attempts=max_attempts,
        )
        fs = pickle.loads(pickle.dumps(s3_filesystem(settings)))
        assert fs.settings == settings
        with pytest.raises(OSError, match="AWS Error NETWORK_CONNECTION during HeadObject"):
            fs.get_file_info("bucket/key")
        return endpoint.connections

    # (curl itself reconnects once to a server that closed without a word: the baseline)
    assert connections_of_one_request(4) - connections_of_one_request(1) == 3
    # the environment's AWS_MAX_ATTEMPTS is taken only when the config leaves it empty
    env = {"AWS_MAX_ATTEMPTS": "2"}
    assert S3Settings.from_config(None, env).max_attempts == 2
    assert S3Settings.from_config(type("Section", (), {"max_attempts": 5}), env).max_attempts == 5
    assert S3Settings.from_config(None, {}).max_attempts == 12
    assert [round(retry_budget_s(n), 2) for n in (1, 2, 10, 12)] == [0.0, 0.05, 25.55, 102.35]
    with pytest.raises(StorageError) as e:
        S3Settings(max_attempts=0)
    assert str(e.value) == (
        "`s3.max_attempts` (0) must be a whole number from 1 to 16 (or AWS_MAX_ATTEMPTS in "
        "the environment)"
    )


def test_plain_http_from_the_environment_needs_allow_http():
    with pytest.raises(StorageError) as e:
        S3Settings.from_config(None, {"AWS_ENDPOINT_URL_S3": "http://10.0.0.9:9000"})
    assert str(e.value).startswith(
        "environment variable AWS_ENDPOINT_URL_S3 ('http://10.0.0.9:9000') is plain http"
    )
    assert "set `s3.allow_http: true`" in str(e.value)


def test_redact_removes_known_credentials_and_credential_shaped_text(monkeypatch, tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text(
        "[other]\naws_access_key_id = FILEKEYID123\naws_secret_access_key = file/secret+X\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-value")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "tok3n-value")
    text = (
        "failed with env-secret-value and tok3n-value; file/secret+X for FILEKEYID123; "
        "key AKIAABCDEFGHIJKLMNOP; Authorization: AWS4-HMAC-SHA256 "
        "Credential=XYZ/20260101/us-east-1/s3/aws4_request, Signature=abc123; "
        "url?X-Amz-Security-Token=sekrit&x=1"
    )
    assert storage.redact(text) == (
        "failed with [redacted] and [redacted]; [redacted] for [redacted]; "
        "key [redacted]; Authorization: AWS4-HMAC-SHA256 "
        "Credential=[redacted], Signature=[redacted]; "
        "url?X-Amz-Security-Token=[redacted]&x=1"
    )


# --- class names and manifest rows on S3, as on a local disk (tljob.data, no Ray) -------------


def test_s3_class_prefixes_that_differ_only_in_case_are_refused_naming_both(s3):
    from tljob.data.listing import DataError, list_images

    for key in ("src/Cat/1.png", "src/cat/2.png", "src/dog/3.png"):
        storage.write_bytes(storage.resolve(s3.uri(key)), b"data")
    with pytest.raises(DataError) as err:
        list_images(s3.uri("src"))
    assert str(err.value).startswith(
        f"`data.source` ({s3.uri('src')!r}): the class folders 'Cat' and 'cat' differ only in "
        "case (compared after NFC normalisation with str.casefold)"
    )


def test_s3_manifest_rows_that_name_a_prefix_are_quarantined_as_is_a_directory(s3):
    from tljob.data.sources import list_manifest

    for key in ("t/a/1.png", "t/a/2.png", "t/b/3.png", "t/b/sub/4.png"):
        storage.write_bytes(storage.resolve(s3.uri(key)), b"x")
    rows = [
        "a/1.png,a",
        "a/2.png,a",
        "b/3.png,b",
        "b/sub,b",  # a prefix with an object below it and no object of its own
        f"{s3.uri('t', 'a')}/,a",  # written as a folder
        "b/gone.png,b",
    ]
    storage.write_text(storage.resolve(s3.uri("t", "m.csv")), "uri,label\n" + "\n".join(rows))
    listing = list_manifest(s3.uri("t", "m.csv"))
    folder = (
        "is_a_directory: the manifest must list image files, not folders; list each image in "
        "this folder as its own row"
    )
    assert listing.quarantined == [
        {"path": s3.uri("t/a"), "reason": folder},
        {"path": s3.uri("t/b/gone.png"), "reason": "missing_object: no such file or object"},
        {"path": s3.uri("t/b/sub"), "reason": folder},
    ]
    assert listing.files == {
        "a": [s3.uri("t/a/1.png"), s3.uri("t/a/2.png")],
        "b": [s3.uri("t/b/3.png")],
    }
    assert listing.listed() == len(rows)
