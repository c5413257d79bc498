"""LSTM engines behind one interface: `lstm` (pure function), the Linen layers `LSTM`, `Bidirectional` and
`Stacked`, and `init_params`. The NNX layers are in `seqclf.lstm.nnx`."""

from seqclf.lstm.api import AUTO, ENGINES, check_engine, init_params, lengths_to_mask, lstm
from seqclf.lstm.layer import LSTM, Bidirectional, Stacked

__all__ = [
  "AUTO",
  "ENGINES",
  "LSTM",
  "Bidirectional",
  "Stacked",
  "check_engine",
  "init_params",
  "lengths_to_mask",
  "lstm",
]
