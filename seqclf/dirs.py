"""Where seqclf keeps what it can rebuild: downloads, encoded datasets, the compiled CPU kernel."""

import os

CACHE_DIR_ENV = "SEQCLF_CACHE_DIR"


def cache_dir() -> str:
  """The cache root: ``$SEQCLF_CACHE_DIR``, else ``$XDG_CACHE_HOME/seqclf``, else ``~/.cache/seqclf``.

  Returns:
    An absolute path (not created here; each user makes its own subdirectory).
  """
  default = os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "seqclf"
  )
  return os.path.abspath(os.environ.get(CACHE_DIR_ENV) or default)
