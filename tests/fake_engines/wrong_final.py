"""An engine right on every step's outputs and wrong on the final-h path (``return_sequences=False``)."""

from seqclf.rnn.engines import fused


def lstm(*args, return_sequences=True):
  outputs, (h, c) = fused.lstm(*args, return_sequences=return_sequences)
  return (outputs, (h, c)) if return_sequences else (outputs * 1.01, (h * 1.01, c))
