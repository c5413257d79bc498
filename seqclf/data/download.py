"""Downloading an aclImdb archive over HTTP(S) into a cache directory, checksummed, like Keras' ``get_file``.

``fetch(url, directory=...)`` returns the path of a local copy of ``url``. A copy already in ``directory``
is returned without touching the network (checked against the sha256 when one is known). Otherwise the
archive is streamed into a temporary file next to its final name, hashed on the way, and renamed only
once it is complete, its sha256 matches and it opens as a gzip'd tar; so a reader never sees half an
archive, and a failed download leaves nothing behind. A process killed outright cannot clean up, so the
downloading process holds a lock on its temporary file, and the next fetch of the same URL deletes the
ones nobody holds. A transfer cut short is resumed with an HTTP ``Range`` request up to ``max_resumes``
times. Every socket operation (connecting, each read) times out
after ``timeout_s``, so an offline machine fails within seconds. Every failure is one `DataError` naming the
URL, what went wrong and the offline alternative.
"""

import contextlib
import hashlib
import http.client
import os
import re
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

from absl import logging

from seqclf.errors import ConfigError, DataError

try:
  import fcntl
except ImportError:  # Windows: no flock, so an abandoned temporary file stays until removed by hand
  fcntl = None

# The official archive (Maas et al. 2011) and the checksum tfds' own checksums file gives for it.
OFFICIAL_URL = "http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
OFFICIAL_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"

TIMEOUT_S = 20.0
MAX_RESUMES = 3

_KNOWN_SHA256 = {OFFICIAL_URL: OFFICIAL_SHA256}
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CHUNK_BYTES = 1 << 16
# A temporary file is locked within microseconds of its creation; one this old that no process holds a
# lock on was left by a process that was killed.
ABANDONED_AFTER_S = 60
_OFFLINE_FIX = (
  "offline, download it elsewhere and pass --imdb=PATH (the aclImdb .tar.gz or its extracted directory)"
)


def is_url(source) -> bool:
  """Whether ``source`` is an ``http://`` or ``https://`` URL."""
  return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def cached_path(url: str, directory: str) -> str:
  """Where :func:`fetch` keeps ``url``: its file name, prefixed by a hash of the whole URL.

  The prefix keeps two URLs with the same file name apart; the name always ends in ``.tar.gz`` (appended
  if the URL's does not end in an archive suffix) because the archive reader goes by the suffix.
  """
  name = os.path.basename(urllib.parse.urlsplit(url).path) or "aclImdb"
  if not name.endswith((".tar.gz", ".tgz")):
    name += ".tar.gz"
  return os.path.join(directory, f"{hashlib.sha256(url.encode('utf-8')).hexdigest()[:12]}-{name}")


def fetch(
  url: str,
  *,
  directory: str,
  sha256: str | None = None,
  timeout_s: float = TIMEOUT_S,
  max_resumes: int = MAX_RESUMES,
  stream=None,
) -> str:
  """Returns the path of a verified local copy of the archive at ``url``, downloading it if needed.

  Args:
    url: An ``http://`` or ``https://`` URL of an aclImdb ``.tar.gz`` archive.
    directory: The cache directory for downloads; created if missing.
    sha256: The archive's expected SHA-256 (hex). Defaults to the known one for :data:`OFFICIAL_URL`; for
      another URL without one, the archive is only checked to be a gzip'd tar, and its sha256 is printed
      so that it can be pinned.
    timeout_s: Timeout of every socket operation: connecting and each read.
    max_resumes: How many times a transfer cut short is resumed before giving up.
    stream: Where progress goes (default stderr): a bar on a terminal, one line per 10 % otherwise.

  Raises:
    ConfigError: ``sha256`` is not 64 hex digits.
    DataError: The download failed (unreachable host, HTTP error, cut short more than ``max_resumes``
      times, checksum mismatch, not an archive) or ``directory`` cannot be written. Nothing is left in
      ``directory`` then.
  """
  stream = stream or sys.stderr
  expected = sha256.strip().lower() if sha256 else _KNOWN_SHA256.get(url)
  if expected is not None and not _SHA256_HEX.fullmatch(expected):
    raise ConfigError(f"--imdb_sha256 must be 64 hexadecimal digits, got {sha256!r}")
  path = cached_path(url, directory)
  if os.path.isfile(path) and (expected is None or _file_sha256(path) == expected):
    return path
  prefix = f".{os.path.basename(path)}."
  try:
    os.makedirs(directory, exist_ok=True)
    _remove_abandoned(directory, prefix)
    descriptor, temp_path = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".part")
    lock = _lock(temp_path)  # held on a descriptor of its own until the file is renamed or deleted
  except OSError as error:
    raise DataError(
      f"cannot write downloads into {directory} ({error.strerror}): pass --cache_dir a writable directory"
    ) from error
  try:
    with os.fdopen(descriptor, "wb") as file:
      digest = _download(url, file, timeout_s=timeout_s, max_resumes=max_resumes, stream=stream)
    if expected is not None and digest != expected:
      raise _download_error(
        url, f"its sha256 is {digest}, not the expected {expected} (a changed or wrong file)"
      )
    _check_is_archive(temp_path, url)
    os.chmod(temp_path, 0o644)  # mkstemp makes it owner-only; an archive is an ordinary file
    os.replace(temp_path, path)
  except BaseException:
    os.unlink(temp_path)
    raise
  finally:
    if lock is not None:
      os.close(lock)
  if expected is None:
    logging.warning("downloaded %s: sha256 %s (pass --imdb_sha256=%s to pin it)", url, digest, digest)
  return path


def _lock(path: str) -> int | None:
  """A descriptor holding an exclusive lock on ``path`` (released when it is closed, or the process ends),
  or None where another process holds one or the platform has no flock."""
  if fcntl is None:
    return None
  descriptor = os.open(path, os.O_RDONLY)
  try:
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    os.close(descriptor)
    return None
  return descriptor


def _remove_abandoned(directory: str, prefix: str) -> None:
  """Deletes this URL's temporary files that are older than `ABANDONED_AFTER_S` and locked by nobody."""
  now = time.time()
  for name in os.listdir(directory):
    part = os.path.join(directory, name)
    if not (name.startswith(prefix) and name.endswith(".part")):
      continue
    with contextlib.suppress(OSError):  # another process may remove it first
      if now - os.path.getmtime(part) > ABANDONED_AFTER_S and (lock := _lock(part)) is not None:
        os.unlink(part)
        os.close(lock)


def _download(url: str, file, *, timeout_s: float, max_resumes: int, stream) -> str:
  """Streams ``url`` into ``file``, resuming a cut transfer; returns the hex sha256 of what was written."""
  digest = hashlib.sha256()
  received, total, resumes = 0, None, 0
  progress = _Progress(url, stream)
  while True:
    headers = {"User-Agent": "seqclf", "Accept-Encoding": "identity"}
    if received:
      headers["Range"] = f"bytes={received}-"
    try:
      response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    except urllib.error.HTTPError as error:
      raise _download_error(url, f"the server answered HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
      reason = getattr(error, "reason", error)
      if isinstance(reason, TimeoutError):
        raise _download_error(url, f"the server did not answer within {timeout_s:g} s") from None
      raise _download_error(url, f"cannot reach the server ({reason})") from None
    cut = None
    with response:
      if received and response.status != 206:  # the server ignored the Range: start over
        received = 0
        digest = hashlib.sha256()
        file.seek(0)
        file.truncate()
      length = response.headers.get("Content-Length")
      if length is not None and length.isdigit():
        total = received + int(length)
      try:
        while chunk := response.read(_CHUNK_BYTES):
          file.write(chunk)
          digest.update(chunk)
          received += len(chunk)
          progress.update(received, total)
      except (OSError, http.client.HTTPException) as error:  # timeouts are OSErrors too
        cut = f"{type(error).__name__}: {error}"
    if cut is None and (total is None or received >= total):
      progress.close()
      return digest.hexdigest()
    if resumes == max_resumes:
      progress.close()
      of_total = f" of {total:,}" if total else ""
      what = f" ({cut})" if cut else ""
      raise _download_error(
        url,
        f"the transfer was cut short at {received:,}{of_total} bytes{what}, also after {max_resumes}"
        " resumed attempts",
      )
    resumes += 1


def _check_is_archive(path: str, url: str) -> None:
  """Refuses a download that is not a gzip'd tar (an HTML error page served with status 200, say)."""
  try:
    with tarfile.open(path, "r:gz") as archive:
      archive.next()
  except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
    with open(path, "rb") as file:
      start = file.read(40)
    raise _download_error(
      url, f"what it served is not a .tar.gz archive ({type(error).__name__}; it starts with {start!r})"
    ) from None


def _file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as file:
    while chunk := file.read(1 << 20):
      digest.update(chunk)
  return digest.hexdigest()


def _download_error(url: str, what: str) -> DataError:
  return DataError(f"cannot download {url}: {what}; nothing was kept; {_OFFLINE_FIX}")


class _Progress:
  """Download progress: a bar with bytes and rate on a terminal, else one line per 10 % (or per 10 MB)."""

  def __init__(self, url: str, stream):
    self.stream, self.name = stream, os.path.basename(urllib.parse.urlsplit(url).path) or url
    self.terminal = stream.isatty()
    self.start = time.perf_counter()
    self.last_shown, self.next_step = 0.0, 1

  def _describe(self, received: int, total: int | None) -> str:
    rate = received / max(time.perf_counter() - self.start, 1e-9)
    size = f"{_size(received)} of {_size(total)}" if total else _size(received)
    return f"{size}, {_size(rate)}/s"

  def update(self, received: int, total: int | None) -> None:
    if self.terminal:
      now = time.perf_counter()
      if now - self.last_shown < 0.1:
        return
      self.last_shown = now
      share = received / total if total else 0.0
      bar = "=" * int(30 * share)
      percent = f"{100 * share:3.0f} %" if total else "  ? %"
      self.stream.write(f"\rdownloading {self.name} [{bar:<30}] {percent} {self._describe(received, total)}")
      self.stream.flush()
      return
    # Without a terminal, lines at every 10 % (every 10 MB when the size is unknown).
    step = int(10 * received / total) if total else received // 10_000_000
    if step >= self.next_step:
      self.next_step = step + 1
      percent = f"{10 * step} %: " if total else ""
      print(
        f"downloading {self.name}: {percent}{self._describe(received, total)}", file=self.stream, flush=True
      )

  def close(self) -> None:
    if self.terminal:
      self.stream.write("\n")
      self.stream.flush()


def _size(count: float) -> str:
  return f"{count / 1e6:.1f} MB" if count >= 1e5 else f"{count / 1e3:.1f} kB"
