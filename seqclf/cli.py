"""What every command-line driver shares: one-line errors with exit code 2, and common flags."""

import functools
import os
import sys

from absl import app, flags, logging

from seqclf.errors import UsageError

flags.DEFINE_bool("verbose", False, "Show full tracebacks for errors instead of one line.")


def usage_errors_exit_2(main):
  """Wraps an absl ``main`` so a `UsageError` prints ``error: <message>`` and exits 2, no traceback."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except UsageError as e:
      if flags.FLAGS.verbose:
        raise
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  return wrapped


def run(main, flags_parser=None):
  """`absl.app.run` with one-line errors for bad flags too (absl's own are a page of help)."""

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    except (KeyError, AttributeError) as e:  # how ml_collections reports --config.<unknown key>
      print(
        f"error: unknown config key {str(e).strip(chr(34))}; check the --config.* names against the "
        "config file",
        file=sys.stderr,
      )
      sys.exit(2)

  logging.set_verbosity(logging.WARNING)
  app.run(usage_errors_exit_2(main), flags_parser=flags_parser or parse)


def default_imdb_source() -> str:
  """``$SEQCLF_IMDB`` if set (a local aclImdb archive or directory), else ``tfds``."""
  return os.environ.get("SEQCLF_IMDB", "tfds")
