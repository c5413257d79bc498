"""Downloading an archive over HTTP from a server on 127.0.0.1 that each test starts (nothing else reached)."""

import contextlib
import fcntl
import hashlib
import http.server
import io
import os
import socket
import threading
import time

import pytest

from seqclf.data import download, imdb
from seqclf.data.cache import load_encoded
from seqclf.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
  """Loopback requests go straight to the test's server, never through a proxy the environment names."""
  monkeypatch.setenv("no_proxy", "127.0.0.1")
  monkeypatch.setenv("NO_PROXY", "127.0.0.1")


class _ArchiveServer(http.server.ThreadingHTTPServer):
  """Serves ``body`` at /aclImdb.tar.gz (with Range support); ``cuts`` requests end after half the bytes."""

  def __init__(self, body: bytes, cuts: int = 0):
    super().__init__(("127.0.0.1", 0), _Handler)
    self.body, self.cuts, self.requests = body, cuts, []

  @property
  def url(self) -> str:
    return f"http://127.0.0.1:{self.server_address[1]}/aclImdb.tar.gz"


class _Handler(http.server.BaseHTTPRequestHandler):
  def do_GET(self):  # noqa: N802 (the name http.server calls)
    server = self.server
    server.requests.append(self.headers.get("Range"))
    if self.path != "/aclImdb.tar.gz":
      self.send_error(404, "Not Found")
      return
    start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-")) if self.headers["Range"] else 0
    body = server.body[start:]
    self.send_response(206 if start else 200)
    if start:
      self.send_header("Content-Range", f"bytes {start}-{len(server.body) - 1}/{len(server.body)}")
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    if server.cuts:
      server.cuts -= 1
      body = body[: len(body) // 2]
      self.wfile.write(body)
      self.close_connection = True
      return
    self.wfile.write(body)

  def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
    del format, args  # keep the test output clean


@contextlib.contextmanager
def serving(body: bytes, cuts: int = 0):
  server = _ArchiveServer(body, cuts)
  thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
  thread.start()
  try:
    yield server
  finally:
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def archive_bytes(tiny_aclimdb_archive) -> bytes:
  return tiny_aclimdb_archive.read_bytes()


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _fetch(url, directory, **kwargs):
  return download.fetch(url, directory=str(directory), timeout_s=5, stream=io.StringIO(), **kwargs)


def test_download_then_cached_run_with_the_server_gone(archive_bytes, tmp_path):
  downloads = tmp_path / "downloads"
  with serving(archive_bytes) as server:
    url = server.url
    path = _fetch(url, downloads, sha256=_sha256(archive_bytes))
  assert open(path, "rb").read() == archive_bytes
  assert os.listdir(downloads) == [os.path.basename(path)]  # no temporary file left
  # The server is gone: a second call must not touch the network.
  assert _fetch(url, downloads, sha256=_sha256(archive_bytes)) == path


def test_a_killed_download_s_temporary_file_is_removed_by_the_next_fetch(archive_bytes, tmp_path):
  """Old and unlocked: a killed process's, deleted. Locked (a live download) or new, or another URL's: kept."""
  downloads = tmp_path / "downloads"
  downloads.mkdir()
  with serving(archive_bytes) as server:
    name = os.path.basename(download.cached_path(server.url, str(downloads)))
    parts = {kind: downloads / f".{name}.{kind}.part" for kind in ("killed", "live", "new")}
    parts["other URL"] = downloads / ".other.tar.gz.killed.part"
    old = time.time() - download.ABANDONED_AFTER_S - 1
    for kind, part in parts.items():
      part.write_bytes(b"half an archive")
      if kind != "new":
        os.utime(part, (old, old))
    with open(parts["live"], "rb") as live:
      fcntl.flock(live, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the downloading process holds it
      path = _fetch(server.url, downloads, sha256=_sha256(archive_bytes))
  kept = [parts[kind].name for kind in ("live", "new", "other URL")]
  assert sorted(os.listdir(downloads)) == sorted([os.path.basename(path), *kept])


def test_a_download_holds_a_lock_on_its_temporary_file(tmp_path):
  """While the bytes arrive, another process cannot lock the temporary file, so it never deletes it."""
  seen = []

  def fake_download(url, file, **kwargs):
    del url, file, kwargs
    (part,) = tmp_path.iterdir()
    seen.append(download._lock(str(part)))
    raise DataError("stopped here")

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(download, "_download", fake_download)
    with pytest.raises(DataError, match="stopped here"):
      _fetch("http://127.0.0.1:9/aclImdb.tar.gz", tmp_path)
  assert seen == [None]
  assert os.listdir(tmp_path) == []


def test_a_cut_connection_is_resumed_with_a_range_request(archive_bytes, tmp_path):
  with serving(archive_bytes, cuts=2) as server:
    path = _fetch(server.url, tmp_path / "downloads", sha256=_sha256(archive_bytes))
    requests = server.requests
  assert open(path, "rb").read() == archive_bytes
  assert requests[0] is None and all(r.startswith("bytes=") for r in requests[1:]) and len(requests) == 3


def test_a_connection_cut_more_often_than_allowed_gives_up(archive_bytes, tmp_path):
  with serving(archive_bytes, cuts=10) as server:
    with pytest.raises(DataError, match=r"cut short .* also after 2 resumed attempts.*--imdb=PATH") as error:
      _fetch(server.url, tmp_path / "downloads", max_resumes=2)
    assert len(server.requests) == 3
  assert server.url in str(error.value)
  assert os.listdir(tmp_path / "downloads") == []


def test_a_wrong_checksum_keeps_nothing(archive_bytes, tmp_path):
  with serving(archive_bytes) as server:
    with pytest.raises(DataError, match=f"sha256 is {_sha256(archive_bytes)}, not the expected 0000"):
      _fetch(server.url, tmp_path / "downloads", sha256="0" * 64)
  assert os.listdir(tmp_path / "downloads") == []


def test_a_malformed_checksum_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match="64 hexadecimal digits"):
    _fetch("http://127.0.0.1:9/aclImdb.tar.gz", tmp_path / "downloads", sha256="abc")


def test_http_404_names_the_status_and_the_offline_alternative(archive_bytes, tmp_path):
  with serving(archive_bytes) as server:
    url = server.url.replace("aclImdb.tar.gz", "missing.tar.gz")
    with pytest.raises(DataError, match=r"HTTP 404 Not Found.*--imdb=PATH") as error:
      _fetch(url, tmp_path / "downloads")
  assert url in str(error.value)
  assert os.listdir(tmp_path / "downloads") == []


def test_a_port_with_no_server_fails_at_once(tmp_path):
  with socket.socket() as probe:  # a port that was free a moment ago, and now has nobody listening
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  url = f"http://127.0.0.1:{port}/aclImdb.tar.gz"
  with pytest.raises(DataError, match=r"cannot reach the server .*refused.*--imdb=PATH") as error:
    _fetch(url, tmp_path / "downloads")
  assert url in str(error.value)
  assert os.listdir(tmp_path / "downloads") == []


def test_a_server_that_never_answers_times_out(tmp_path):
  with socket.socket() as silent:  # accepts connections (the kernel does) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/aclImdb.tar.gz"
    with pytest.raises(DataError, match=r"did not answer within 0.5 s.*--imdb=PATH"):
      download.fetch(url, directory=str(tmp_path / "downloads"), timeout_s=0.5, stream=io.StringIO())
  assert os.listdir(tmp_path / "downloads") == []


def test_a_page_that_is_not_an_archive_is_refused(tmp_path):
  with serving(b"<html>Service unavailable</html>") as server:
    with pytest.raises(DataError, match=r"not a \.tar\.gz archive .*<html>"):
      _fetch(server.url, tmp_path / "downloads")
  assert os.listdir(tmp_path / "downloads") == []


def test_without_a_checksum_the_digest_is_logged_to_pin_it(archive_bytes, tmp_path, caplog):
  with serving(archive_bytes) as server:
    download.fetch(server.url, directory=str(tmp_path), timeout_s=5, stream=io.StringIO())
  assert f"--imdb_sha256={_sha256(archive_bytes)}" in caplog.text


def test_progress_without_a_terminal_is_one_line_per_ten_percent(tmp_path):
  body = os.urandom(download._CHUNK_BYTES * 40)  # forty reads, so every 10 % step is crossed once
  stream = io.StringIO()
  with serving(body) as server:
    with pytest.raises(DataError, match="not a .tar.gz archive"):
      download.fetch(server.url, directory=str(tmp_path), timeout_s=5, stream=stream, sha256=_sha256(body))
  lines = stream.getvalue().splitlines()
  assert [line.split(": ")[1].split(" %")[0] for line in lines] == [str(p) for p in range(10, 101, 10)]
  assert all("MB/s" in line for line in lines)


def test_the_default_source_is_the_official_archive(monkeypatch):
  monkeypatch.delenv(imdb.SOURCE_ENV, raising=False)
  assert imdb.default_source() == download.OFFICIAL_URL
  assert download._KNOWN_SHA256[download.OFFICIAL_URL] == download.OFFICIAL_SHA256
  monkeypatch.setenv(imdb.SOURCE_ENV, "http://127.0.0.1:1/a.tar.gz")
  assert imdb.default_source() == "http://127.0.0.1:1/a.tar.gz"


def test_load_encoded_reads_a_url_through_the_cache(archive_bytes, tiny_aclimdb_archive, tmp_path):
  options = {"top_words": 30, "maxlen": 10, "cache_dir": str(tmp_path / "cache")}
  with serving(archive_bytes) as server:
    from_url = load_encoded(server.url, sha256=_sha256(archive_bytes), **options)
  from_file = load_encoded(str(tiny_aclimdb_archive), **options)
  assert (from_url.x_train == from_file.x_train).all() and (from_url.y_test == from_file.y_test).all()
  assert len(os.listdir(tmp_path / "cache" / "downloads")) == 1


def test_sha256_for_a_local_path_is_refused(tiny_aclimdb_archive, tmp_path):
  with pytest.raises(ConfigError, match="only applies to an http"):
    load_encoded(str(tiny_aclimdb_archive), sha256="0" * 64, cache_dir=str(tmp_path))


def test_tfds_unprepared_downloads_the_official_archive_then_prepares_it_offline(
  archive_bytes, tiny_aclimdb_archive, tmp_path, monkeypatch
):
  pytest.importorskip("tensorflow_datasets")
  tfds_dir, downloads = str(tmp_path / "tfds"), str(tmp_path / "downloads")
  with serving(archive_bytes) as server:
    monkeypatch.setattr(download, "OFFICIAL_URL", server.url)  # the loopback server plays the official host
    assert imdb.local_source("tfds", download_dir=downloads, tfds_data_dir=tfds_dir) == "tfds"
  from_tfds, from_archive = (
    imdb.load_imdb("tfds", tfds_data_dir=tfds_dir),
    imdb.load_imdb(str(tiny_aclimdb_archive)),
  )
  assert sorted(from_tfds.test.texts) == sorted(from_archive.test.texts)
  # Prepared now: the next call neither downloads nor prepares (the server is gone).
  assert imdb.local_source("tfds", download_dir=downloads, tfds_data_dir=tfds_dir) == "tfds"
