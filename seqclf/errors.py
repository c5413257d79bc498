"""User-facing errors.

Anything a user can cause by what they pass in (a path, a flag, a config value, a data file) is raised as
:class:`UsageError`. Command-line drivers catch it, print its one-line message and exit with status 2,
with no traceback (unless ``--verbose``); library callers can catch it like any other exception.
"""


class UsageError(Exception):
  """Bad input from the user: the message names the problem and, where there is one, the fix."""


class DataError(UsageError):
  """A dataset, archive or data file is missing, unreadable or malformed."""


class DamagedCheckpointError(DataError):
  """A checkpoint's files cannot be read. Reads of them may still be pending on TensorStore's threads,
  which at interpreter teardown call into a closed event loop and print tracebacks (some runs, not all),
  so drivers end the process as soon as the error line is written."""


class ConfigError(UsageError, ValueError):
  """A config value, flag or argument is out of range or unknown; also a ValueError, as JAX users catch
  a library's bad arguments."""


class DivergedError(UsageError):
  """Training produced a NaN or infinite loss; the message names the step and what to change."""


class ResourceError(UsageError):
  """A config would not fit in the memory of the device it runs on (found before allocating)."""


class StorageError(UsageError):
  """A run directory or cache cannot be written (disk full, read-only, no permission); the message says
  what is safely on disk and how to go on."""


class BusyError(UsageError):
  """Another process holds the run directory (its lock); the message names that process."""


class Interrupted(Exception):
  """The user stopped a driver (Ctrl-C); the message says what is on disk and how to go on. Drivers print
  it as one line and exit with 130, as a shell does for SIGINT."""
