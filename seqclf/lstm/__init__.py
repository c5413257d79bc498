"""LSTM engines behind one interface: `lstm` (pure function), `LSTM` (Flax module), `init_params`."""

from seqclf.lstm.api import AUTO, ENGINES, init_params, lengths_to_mask, lstm, resolve_engine
from seqclf.lstm.layer import LSTM

__all__ = ["AUTO", "ENGINES", "LSTM", "init_params", "lengths_to_mask", "lstm", "resolve_engine"]
