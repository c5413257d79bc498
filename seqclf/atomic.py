"""Atomic file writes: a reader (or a killed run) sees the old file or the complete new one, never half.

Every file seqclf writes for later use (results, vocabularies, caches, run configs) goes through here.
"""

import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO


def write_atomically(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
  """Writes a file through ``write`` so that ``path`` holds either its old content or the complete new one.

  The data goes to a temporary file in the same directory (so the final rename stays on one file system),
  is flushed to disk, then renamed over ``path``. On any error, even an interrupt, the temporary file is
  removed; only a killed process can leave one behind, named ``.<name>.*.tmp``, never ``path`` itself.

  Args:
    path: The file to write.
    write: Called with the temporary file, opened for binary writing.
  """
  path = os.fspath(path)
  directory, name = os.path.split(os.path.abspath(path))
  descriptor, temp_path = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
  try:
    with os.fdopen(descriptor, "wb") as file:
      write(file)
      file.flush()
      os.fsync(file.fileno())
    # mkstemp creates the file readable by its owner only; give it an ordinary file's permissions.
    os.chmod(temp_path, 0o644)
    os.replace(temp_path, path)
  except BaseException:
    os.unlink(temp_path)
    raise
