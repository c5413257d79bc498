"""An engine whose outputs are 1 % off."""

from seqclf.rnn.engines import fused


def lstm(*args):
  outputs, (h, c) = fused.lstm(*args)
  return outputs * 1.01, (h, c)
