"""A correct engine: scan itself."""

from seqclf.lstm.scan import lstm  # noqa: F401
