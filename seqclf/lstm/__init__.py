"""LSTM and GRU engines behind one interface: the pure functions `lstm` and `gru`, the Linen layers
`LSTM`, `GRU`, `Bidirectional` and `Stacked`, `init_params` and `init_gru_params`. The NNX layers are in
`seqclf.lstm.nnx`."""

from seqclf.lstm.api import (
  AUTO,
  ENGINES,
  GRU_ENGINES,
  check_engine,
  init_params,
  lengths_to_mask,
  lstm,
  resolve_engine,
)
from seqclf.lstm.gru import gru, init_gru_params
from seqclf.lstm.layer import LSTM, Bidirectional, Stacked

__all__ = [
  "AUTO",
  "ENGINES",
  "GRU_ENGINES",
  "LSTM",
  "Bidirectional",
  "Stacked",
  "check_engine",
  "gru",
  "init_gru_params",
  "init_params",
  "lengths_to_mask",
  "lstm",
  "resolve_engine",
]
