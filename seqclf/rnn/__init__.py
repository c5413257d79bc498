"""Recurrent layers where a cell is data: the pure functions `rnn` (any `Cell`), `lstm` and `gru`, the Linen
layers `LSTM`, `GRU`, `Recurrent`, `Bidirectional` and `Stacked`, Keras' initialisation and the Keras and
PyTorch converters of each cell. The NNX layers are in `seqclf.rnn.nnx`, the engines and their
capabilities in `seqclf.rnn.engines`.

    from seqclf.rnn import LSTM, GRU, lstm, gru
"""

from seqclf.rnn.api import compute_dtype, gru, init_gru_params, init_params, lengths_to_mask, lstm, rnn
from seqclf.rnn.cells import CELLS, GRU_CELL, LSTM_CELL, RECURRENT_ACTIVATIONS, Cell, init_cell_params
from seqclf.rnn.engines import AUTO, ENGINES, check_engine, engines_of
from seqclf.rnn.linen import GRU, LSTM, Bidirectional, Recurrent, Stacked

__all__ = [
  "AUTO",
  "CELLS",
  "ENGINES",
  "GRU",
  "GRU_CELL",
  "LSTM",
  "LSTM_CELL",
  "RECURRENT_ACTIVATIONS",
  "Bidirectional",
  "Cell",
  "Recurrent",
  "Stacked",
  "check_engine",
  "compute_dtype",
  "engines_of",
  "gru",
  "init_cell_params",
  "init_gru_params",
  "init_params",
  "lengths_to_mask",
  "lstm",
  "rnn",
]
