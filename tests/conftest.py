"""Shared fixtures (a tiny aclImdb tree, as a directory and as an archive, and the real IMDB archive), the
suite's compilation cache and its duration budget.

The tiny tree has three reviews per split and label. Its texts exercise the tokenizer: line-break tags,
punctuation, an apostrophe word ("don't"), quotes, uppercase and a non-ASCII word ("café"). File ids are
chosen so that numeric order differs from name order (2 < 10, but "10_3.txt" < "2_1.txt").
"""

import os
import pathlib
import shutil
import sys
import tarfile
import tempfile

import pytest

_REAL_ARCHIVE_ENV = "SEQCLF_IMDB"

# OpenBLAS (jaxlib's LAPACK on some stacks, through SciPy) on one thread in the tests and the processes they
# start: its thread server, called from XLA's own thread pool (QR of the orthogonal initializer), was seen
# to spin forever in exec_blas; the tests' matrices are tiny. Set before anything loads it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# A test should prove its property in well under this many seconds on a 2-core machine; the few that cannot
# are marked ``slow`` (pyproject.toml) and named with their reason.
DURATION_BUDGET_S = 30.0
_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_CACHE_KEY = pytest.StashKey[str]()


def pytest_configure(config):
  """One JAX persistent compilation cache for the whole run: the same functions are compiled again and again
  by the driver processes the tests start and by fresh ``jax.jit`` wrappers of one function, and a cache hit
  replaces a compile. The first process of the run (pytest-xdist's controller, or pytest alone) makes it and
  removes it at the end; workers and driver processes inherit it through the environment."""
  if _CACHE_ENV in os.environ:
    return
  directory = tempfile.mkdtemp(prefix="seqclf-tests-jax-cache-")
  config.stash[_CACHE_KEY] = directory
  # Every compile, however short: most of the suite's are well under jax's default one-second threshold.
  settings = {_CACHE_ENV: directory, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  os.environ.update(settings)
  if "jax" in sys.modules:  # a plugin imported jax before this hook: it has read its environment already
    for name, value in settings.items():
      sys.modules["jax"].config.update(name.lower(), value if name == _CACHE_ENV else float(value))


def pytest_unconfigure(config):
  directory = config.stash.get(_CACHE_KEY, None)
  if directory:
    shutil.rmtree(directory, ignore_errors=True)
    os.environ.pop(_CACHE_ENV, None)


def pytest_terminal_summary(terminalreporter):
  """Names every test over the duration budget (setup, call and teardown together) not marked ``slow``."""
  seconds, slow = {}, set()
  for reports in terminalreporter.stats.values():
    for report in reports:
      if getattr(report, "when", None) in ("setup", "call", "teardown"):
        seconds[report.nodeid] = seconds.get(report.nodeid, 0.0) + report.duration
        if "slow" in report.keywords:
          slow.add(report.nodeid)
  over = sorted((-s, nodeid) for nodeid, s in seconds.items() if s > DURATION_BUDGET_S and nodeid not in slow)
  if over:
    terminalreporter.section(f"over the {DURATION_BUDGET_S:.0f} s budget and not marked slow")
    for minus_seconds, nodeid in over:
      terminalreporter.write_line(f"{-minus_seconds:7.1f} s  {nodeid}")


# Relative path under aclImdb/ -> review text.
_TINY_ACLIMDB_REVIEWS = {
  "train/neg/0_2.txt": "Bad movie. Bad acting!",
  "train/neg/2_1.txt": "The END",
  "train/neg/10_3.txt": "I don't like it.<br /><br />Bad.",
  "train/pos/1_9.txt": "Great movie, great CAST.",
  "train/pos/3_10.txt": "Café: great; I LOVE it",
  "train/pos/12_8.txt": "'Great' fun",
  "test/neg/0_2.txt": "Boring movie, bad plot.",
  "test/neg/1_4.txt": "Terrible.<br/>Not great",
  "test/neg/7_1.txt": "BAD<br>bad",
  "test/pos/0_7.txt": "A great film",
  "test/pos/5_10.txt": "Loved it! Don't miss.",
  "test/pos/9_9.txt": "Great, great fun",
}


def _write_aclimdb_tree(parent: pathlib.Path, reviews: dict[str, str]) -> pathlib.Path:
  """Writes ``reviews`` (relative path under aclImdb/ -> text) as ``parent/aclImdb/...``; returns parent."""
  for relative_path, text in reviews.items():
    review_path = parent / "aclImdb" / relative_path
    review_path.parent.mkdir(parents=True, exist_ok=True)
    review_path.write_text(text, encoding="utf-8")
  # Present in the real dataset; the readers must skip it.
  (parent / "aclImdb" / "README").write_text("Large Movie Review Dataset (tiny test copy)\n")
  return parent


def _write_archive(archive_path: pathlib.Path, tree_parent: pathlib.Path) -> pathlib.Path:
  """Writes ``tree_parent/aclImdb`` as a .tar.gz with members named ``aclImdb/...``, like the real one."""
  with tarfile.open(archive_path, "w:gz") as archive:
    archive.add(tree_parent / "aclImdb", arcname="aclImdb")
  return archive_path


@pytest.fixture
def tiny_aclimdb_reviews() -> dict[str, str]:
  """The tiny tree's reviews: relative path under aclImdb/ -> text."""
  return dict(_TINY_ACLIMDB_REVIEWS)


@pytest.fixture
def tiny_aclimdb(tmp_path: pathlib.Path) -> pathlib.Path:
  """A directory holding a tiny ``aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt`` tree."""
  return _write_aclimdb_tree(tmp_path / "tiny_tree", _TINY_ACLIMDB_REVIEWS)


@pytest.fixture
def tiny_aclimdb_archive(tmp_path: pathlib.Path, tiny_aclimdb: pathlib.Path) -> pathlib.Path:
  """The tiny tree as a ``.tar.gz`` archive."""
  return _write_archive(tmp_path / "tiny_aclImdb.tar.gz", tiny_aclimdb)


@pytest.fixture(scope="session")
def real_imdb_archive() -> pathlib.Path:
  """The full labelled aclImdb archive at ``$SEQCLF_IMDB``; skips if it is not set or not a file."""
  archive_path = pathlib.Path(os.environ.get(_REAL_ARCHIVE_ENV) or "")
  if not os.environ.get(_REAL_ARCHIVE_ENV) or not archive_path.is_file():
    pytest.skip(
      f"real IMDB archive not found at {archive_path}: set ${_REAL_ARCHIVE_ENV} to aclImdb_labeled.tar.gz"
    )
  return archive_path
