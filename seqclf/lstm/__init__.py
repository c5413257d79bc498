"""The package's former name, kept for one release: everything is in `seqclf.rnn` now.

Importing it warns once (DeprecationWarning); ``from seqclf.lstm import LSTM, lstm, nnx`` and the rest of
its former top level keep working meanwhile.
"""

import warnings

from seqclf.rnn import *  # noqa: F403 -- the whole public surface, re-exported
from seqclf.rnn import __all__ as _rnn_all
from seqclf.rnn import nnx
from seqclf.rnn.cells import GRU_CELL as _GRU

warnings.warn(
  "seqclf.lstm is now seqclf.rnn (import from seqclf.rnn; seqclf.lstm goes in the next release)",
  DeprecationWarning,
  stacklevel=2,
)

gru_from_keras, gru_from_torch = _GRU.from_keras, _GRU.from_torch
__all__ = [*_rnn_all, "gru_from_keras", "gru_from_torch", "nnx"]
