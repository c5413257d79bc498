"""`seqclf.atomic.write_atomically`: the old file or the complete new one, never half, no temp files left."""

import os
import stat

import pytest

from seqclf.atomic import write_atomically


def test_writes_the_file_readable_like_any_other(tmp_path):
  path = tmp_path / "out.bin"
  write_atomically(path, lambda file: file.write(b"new"))
  assert path.read_bytes() == b"new"
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # not mkstemp's owner-only mode
  assert os.listdir(tmp_path) == ["out.bin"]


def test_replaces_an_existing_file(tmp_path):
  path = tmp_path / "out.txt"
  path.write_text("old")
  write_atomically(str(path), lambda file: file.write(b"new"))
  assert path.read_text() == "new"


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, error):
  path = tmp_path / "out.txt"
  path.write_text("old")

  def write(file):
    file.write(b"half of the ne")
    raise error

  with pytest.raises(type(error)):
    write_atomically(path, write)
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["out.txt"]


def test_a_missing_directory_is_an_os_error_and_creates_nothing(tmp_path):
  with pytest.raises(FileNotFoundError):
    write_atomically(tmp_path / "missing" / "out.txt", lambda file: file.write(b"x"))
  assert not (tmp_path / "missing").exists()
