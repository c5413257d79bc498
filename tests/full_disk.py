"""A real full file system for storage-fault tests: a small tmpfs, mounted where the test may (root)."""

import contextlib
import errno
import os
import subprocess

import pytest


@contextlib.contextmanager
def small_tmpfs(path, size="1m"):
  """Mounts a tmpfs of ``size`` at ``path`` (created) for the block; skips the test where it cannot."""
  if os.geteuid() != 0:
    pytest.skip("mounting a small tmpfs needs root")
  path.mkdir(exist_ok=True)
  mounted = subprocess.run(
    ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
  )
  if mounted.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
  try:
    yield path
  finally:  # lazily: a file a failed test left open must not keep the mount
    subprocess.run(["umount", "--lazy", str(path)], check=False)


def fill(filler, room: int = 0) -> None:
  """Writes ``filler`` until its file system is full, then gives ``room`` bytes back."""
  fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
  try:
    while os.write(fd, bytes(4096)):
      pass
  except OSError as error:
    assert error.errno == errno.ENOSPC
    os.ftruncate(fd, os.fstat(fd).st_size - room)
  finally:
    os.close(fd)
