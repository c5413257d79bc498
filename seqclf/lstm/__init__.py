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
)
from seqclf.lstm.gru_api import from_keras as gru_from_keras
from seqclf.lstm.gru_api import from_torch as gru_from_torch
from seqclf.lstm.gru_api import gru, init_gru_params
from seqclf.lstm.layer import GRU, LSTM, Bidirectional, Stacked

__all__ = [
  "AUTO",
  "ENGINES",
  "GRU",
  "GRU_ENGINES",
  "LSTM",
  "Bidirectional",
  "Stacked",
  "check_engine",
  "gru",
  "gru_from_keras",
  "gru_from_torch",
  "init_gru_params",
  "init_params",
  "lengths_to_mask",
  "lstm",
]
