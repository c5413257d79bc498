"""``--imdb``, ``--imdb_sha256`` and ``--cache_dir``: where the IMDB data comes from, for every driver that
trains on it (``seqclf.main``, ``seqclf.benchmarks.article``).

The flags are defined by `define_flags`, which those drivers call (as for ``--preset`` and ``--profile_dir``);
`load` reads them and returns the encoded arrays a config asks for, so the drivers share one meaning of
each flag as well as one spelling.
"""

from absl import flags

from seqclf.data import imdb, load_encoded

# The flags, once a driver called `define_flags`.
IMDB: flags.FlagHolder | None = None
IMDB_SHA256: flags.FlagHolder | None = None
CACHE_DIR: flags.FlagHolder | None = None


def define_flags() -> None:
  """Defines ``--imdb``, ``--imdb_sha256`` and ``--cache_dir`` for a driver; defined once per process."""
  global IMDB, IMDB_SHA256, CACHE_DIR
  if IMDB is not None:
    return
  IMDB = flags.DEFINE_string(
    "imdb",
    imdb.default_source(),
    "IMDB source (seqclf.main: when no --train_file): a local aclImdb .tar.gz or directory, an http(s) URL"
    " of the archive (downloaded once into the cache), or 'tfds'. Default: $SEQCLF_IMDB, else the official"
    " archive's URL.",
  )
  IMDB_SHA256 = flags.DEFINE_string(
    "imdb_sha256", None, "Expected SHA-256 of the archive at an --imdb URL (known for the official one)."
  )
  CACHE_DIR = flags.DEFINE_string(
    "cache_dir", None, "IMDB downloads and encoded-data cache (default $SEQCLF_CACHE_DIR or ~/.cache/seqclf)."
  )


def given() -> bool:
  """Whether the command line chose the IMDB data (``--imdb`` or ``--imdb_sha256``)."""
  return IMDB.present or bool(IMDB_SHA256.value)


def load(config):
  """The IMDB arrays the flags and ``config`` (top_words, maxlen, padding, truncating) choose."""
  return load_encoded(
    IMDB.value,
    top_words=config.top_words,
    maxlen=config.maxlen,
    padding=config.padding,
    truncating=config.truncating,
    cache_dir=CACHE_DIR.value,
    sha256=IMDB_SHA256.value,
  )
