"""A correct engine: scan itself."""

from seqclf.rnn.engines.scan import lstm  # noqa: F401
