"""The article's four variants in PyTorch, for `seqclf.benchmarks.peers.fit_peer("torch", ...)`.

``Embedding -> [word dropout] -> [Dropout] -> [Conv1d + MaxPool] -> LSTM -> [Dropout] -> Linear``, built
from the same `seqclf.models.VARIANTS` fields as seqclf's model, with Keras' initialisation.

Two PyTorch differences are bridged so the parameter counts equal Keras' (`KERAS_PARAM_COUNTS`):

* nn.LSTM has two bias vectors (``bias_ih``, ``bias_hh``); Keras and seqclf have one. ``bias_hh`` is set
  to zero and frozen, so the model is the same function with the same trainable parameters.
* nn.LSTM has no recurrent dropout (its ``dropout`` sits between stacked layers), so the
  lstm_recurrent_dropout variant runs `RecurrentDropoutLSTM`, a step loop in Python. It is several times
  slower than nn.LSTM's fused kernel; that is what this variant costs in plain PyTorch.

The ``gru*`` variants run ``nn.GRU`` (the cell of seqclf's GRU and Keras' ``reset_after=True``, with the
same two biases, so no bridging), or `RecurrentDropoutGRU` for recurrent dropout.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqclf import models


def _dropout_mask(like: torch.Tensor, shape: tuple[int, ...], rate: float) -> torch.Tensor:
  """0 or 1/(1-rate) per entry of ``shape``, to broadcast over the axes of size 1 (e.g. every time step)."""
  return F.dropout(like.new_ones(shape), rate, training=True)


class RecurrentDropoutLSTM(nn.Module):
  """An LSTM with Keras' recurrent dropout: one mask on ``h`` per sequence, reused at every step.

  Gates in nn.LSTM's order (i, f, g, o), one bias. The input projection of all steps is one matmul; only
  the recurrence loops. ``forward(xs [B, T, E]) -> h [B, H]``, the last hidden state.
  """

  def __init__(self, input_size: int, hidden_size: int, recurrent_dropout: float):
    super().__init__()
    self.hidden_size = hidden_size
    self.recurrent_dropout = recurrent_dropout
    self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
    self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
    self.bias = nn.Parameter(torch.empty(4 * hidden_size))

  def forward(self, xs: torch.Tensor) -> torch.Tensor:
    batch = xs.shape[0]
    projected = xs @ self.weight_ih.T + self.bias
    h = c = xs.new_zeros(batch, self.hidden_size)
    mask = None
    if self.training and self.recurrent_dropout > 0:
      mask = _dropout_mask(xs, (batch, self.hidden_size), self.recurrent_dropout)
    for step in range(xs.shape[1]):
      gates = projected[:, step] + (h if mask is None else h * mask) @ self.weight_hh.T
      i, f, g, o = gates.chunk(4, dim=1)
      c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
      h = torch.sigmoid(o) * torch.tanh(c)
    return h


class RecurrentDropoutGRU(nn.Module):
  """A GRU with Keras' recurrent dropout (one mask on ``h`` before the recurrent product, per sequence;
  ``z * h`` keeps the undropped ``h``). Gates in nn.GRU's order (r, z, n), its two biases; the input
  projection of all steps is one matmul. ``forward(xs [B, T, E]) -> h [B, H]``, the last hidden state."""

  def __init__(self, input_size: int, hidden_size: int, recurrent_dropout: float):
    super().__init__()
    self.hidden_size = hidden_size
    self.recurrent_dropout = recurrent_dropout
    self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
    self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
    self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size))
    self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size))

  def forward(self, xs: torch.Tensor) -> torch.Tensor:
    batch = xs.shape[0]
    x_r, x_z, x_n = (xs @ self.weight_ih.T + self.bias_ih).chunk(3, dim=2)
    h = xs.new_zeros(batch, self.hidden_size)
    mask = None
    if self.training and self.recurrent_dropout > 0:
      mask = _dropout_mask(xs, (batch, self.hidden_size), self.recurrent_dropout)
    for step in range(xs.shape[1]):
      h_r, h_z, h_n = ((h if mask is None else h * mask) @ self.weight_hh.T + self.bias_hh).chunk(3, dim=1)
      r = torch.sigmoid(x_r[:, step] + h_r)
      z = torch.sigmoid(x_z[:, step] + h_z)
      n = torch.tanh(x_n[:, step] + r * h_n)
      h = z * h + (1 - z) * n
    return h


class Classifier(nn.Module):
  """Token ids [B, T] -> one logit per review [B]; the fields are those of `seqclf.models.SequenceClassifier`."""

  def __init__(
    self,
    vocab_size: int,
    embed_dim: int,
    lstm_features: int,
    *,
    word_dropout: float = 0.0,
    embedding_dropout: float = 0.0,
    conv_filters: int = 0,
    conv_width: int = 3,
    pool_size: int = 2,
    lstm_input_dropout: float = 0.0,
    lstm_recurrent_dropout: float = 0.0,
    output_dropout: float = 0.0,
    cell: str = "lstm",
  ):
    super().__init__()
    self.word_dropout = word_dropout
    self.embedding_dropout = embedding_dropout
    self.pool_size = pool_size
    self.lstm_input_dropout = lstm_input_dropout
    self.output_dropout = output_dropout
    self.embedding = nn.Embedding(vocab_size, embed_dim)
    self.conv = nn.Conv1d(embed_dim, conv_filters, conv_width, padding="same") if conv_filters else None
    lstm_inputs = conv_filters or embed_dim
    if cell == "gru" and lstm_recurrent_dropout:
      self.lstm = RecurrentDropoutGRU(lstm_inputs, lstm_features, lstm_recurrent_dropout)
    elif cell == "gru":
      self.lstm = nn.GRU(lstm_inputs, lstm_features, batch_first=True)
    elif lstm_recurrent_dropout:
      self.lstm = RecurrentDropoutLSTM(lstm_inputs, lstm_features, lstm_recurrent_dropout)
    else:
      self.lstm = nn.LSTM(lstm_inputs, lstm_features, batch_first=True)
    self.head = nn.Linear(lstm_features, 1)
    self._init_like_keras()

  def _init_like_keras(self) -> None:
    """Embedding uniform(±0.05), glorot-uniform kernels, orthogonal recurrent kernel, zero biases but an
    LSTM's forget gate's 1; nn.LSTM's second bias frozen at 0 (a GRU keeps both, as Keras' does)."""
    nn.init.uniform_(self.embedding.weight, -0.05, 0.05)
    recurrent = self.lstm
    if isinstance(recurrent, (nn.LSTM, nn.GRU)):
      weight_ih, weight_hh = recurrent.weight_ih_l0, recurrent.weight_hh_l0
      biases = [recurrent.bias_ih_l0, recurrent.bias_hh_l0]
    elif isinstance(recurrent, RecurrentDropoutGRU):
      weight_ih, weight_hh, biases = (
        recurrent.weight_ih,
        recurrent.weight_hh,
        [recurrent.bias_ih, recurrent.bias_hh],
      )
    else:
      weight_ih, weight_hh, biases = recurrent.weight_ih, recurrent.weight_hh, [recurrent.bias]
    nn.init.xavier_uniform_(weight_ih)  # fans as Keras' [E, 4H] / [E, 3H] kernel: the transpose has the same
    nn.init.orthogonal_(weight_hh)
    for bias in biases:
      nn.init.zeros_(bias)
    if isinstance(recurrent, nn.LSTM):
      recurrent.bias_hh_l0.requires_grad_(False)
    if isinstance(recurrent, (nn.LSTM, RecurrentDropoutLSTM)):
      hidden = weight_hh.shape[1]
      with torch.no_grad():
        biases[0][hidden : 2 * hidden] = 1.0
    for layer in (self.conv, self.head):
      if layer is not None:
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)

  def forward(self, tokens: torch.Tensor) -> torch.Tensor:
    table = self.embedding.weight
    if self.training and self.word_dropout > 0:  # whole vocabulary rows, as Keras 1's Embedding(dropout)
      table = table * _dropout_mask(table, (table.shape[0], 1), self.word_dropout)
    x = F.embedding(tokens, table)
    x = F.dropout(x, self.embedding_dropout, training=self.training)
    if self.conv is not None:
      x = F.relu(self.conv(x.transpose(1, 2)))
      x = F.max_pool1d(x, self.pool_size).transpose(1, 2)
    if self.training and self.lstm_input_dropout > 0:
      x = x * _dropout_mask(x, (x.shape[0], 1, x.shape[2]), self.lstm_input_dropout)
    if isinstance(self.lstm, nn.GRU):
      h = self.lstm(x)[1][0]
    elif isinstance(self.lstm, nn.LSTM):
      h = self.lstm(x)[1][0][0]
    else:
      h = self.lstm(x)
    h = F.dropout(h, self.output_dropout, training=self.training)
    return self.head(h)[:, 0]


def create_model(variant: str, config) -> Classifier:
  return Classifier(
    config.top_words, config.model.embed_dim, config.model.lstm_features, **models.VARIANTS[variant]
  )


def trainable_parameter_count(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters() if p.requires_grad)


class TorchTrainer:
  """A `seqclf.benchmarks.peers.PeerTrainer` over a `Classifier` and torch.optim.Adam."""

  def __init__(self, model: Classifier, config, device: torch.device):
    self.model = model.to(device)
    self.device = device
    self.trainable = [p for p in model.parameters() if p.requires_grad]
    self.param_count = trainable_parameter_count(model)
    self.optimizer = torch.optim.Adam(self.trainable, lr=config.learning_rate, eps=config.adam_eps)
    self.grad_clip_norm = config.get("grad_clip_norm") or 0.0

  def _tensor(self, array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).to(self.device, non_blocking=True)

  def _forward_backward(self, batch: dict) -> torch.Tensor:
    """Gradients into ``.grad``; returns [loss sum, correct, count] of the batch, on the device."""
    self.model.train()
    labels, weights = self._tensor(batch["labels"]).float(), self._tensor(batch["weights"])
    logits = self.model(self._tensor(batch["tokens"]))
    losses = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    count = weights.sum()
    self.optimizer.zero_grad(set_to_none=True)
    ((losses * weights).sum() / count.clamp(min=1.0)).backward()
    correct = (((logits > 0).float() == labels).float() * weights).sum()
    return torch.stack([(losses * weights).sum(), correct, count]).detach()

  def warm_up(self, batch: dict, eval_tokens: np.ndarray) -> None:
    self._forward_backward(batch)
    self.optimizer.zero_grad(set_to_none=True)  # no optimizer step: Adam's state stays untouched
    self.predict(eval_tokens)

  def train_epoch(self, batches) -> tuple[float, float]:
    total = torch.zeros(3, device=self.device, dtype=torch.float64)
    for batch in batches:
      total += self._forward_backward(batch)
      if self.grad_clip_norm:
        nn.utils.clip_grad_norm_(self.trainable, self.grad_clip_norm)
      self.optimizer.step()
    loss_sum, correct, count = total.tolist()  # waits for the device: the epoch's clock stops after this
    return loss_sum / max(count, 1.0), correct / max(count, 1.0)

  def predict(self, tokens: np.ndarray) -> np.ndarray:
    self.model.eval()
    with torch.no_grad():
      return self.model(self._tensor(tokens)).float().cpu().numpy()


def create_trainer(variant: str, config, *, seed: int) -> TorchTrainer:
  """Seeds torch, uses CUDA if present, else every core it may run on with denormals flushed to zero."""
  torch.manual_seed(seed)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  if device.type == "cpu":
    # The cores this process may run on, as for the cpu_kernel engine: `taskset` narrows both alike.
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    # As XLA's CPU backend runs (flush-to-zero): without it the LSTM's backward pass meets denormal
    # numbers and a full epoch took 267-306 s instead of ~64 s on the 2-core CPU, which would not be a fair peer.
    torch.set_flush_denormal(True)
  return TorchTrainer(create_model(variant, config), config, device)
