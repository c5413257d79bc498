"""The training progress line on a terminal: examples/s and loss as an epoch runs."""

import sys
import time

import jax


class Progress:
  """A one-line progress bar on stderr with examples/s and loss; silent when stderr is not a terminal."""

  def __init__(self, label: str, total_steps: int, batch_size: int, stream=None):
    self.stream = stream or sys.stderr
    self.enabled = self.stream.isatty()
    self.label, self.total, self.batch_size = label, total_steps, batch_size
    self.start = time.perf_counter()
    self.shown = 0

  def update(self, step: int, metrics) -> None:
    """Shows step ``step`` of the epoch; ``metrics`` are the epoch's summed train metrics so far."""
    if not self.enabled or (step - self.shown < 10 and step != self.total):
      return
    self.shown = step
    totals = jax.device_get(metrics)  # a device sync, only when someone is watching
    loss = float(totals["loss_sum"]) / max(float(totals["count"]), 1.0)
    rate = step * self.batch_size / max(time.perf_counter() - self.start, 1e-9)
    filled = int(30 * step / self.total)
    self.stream.write(
      f"\r{self.label} [{'=' * filled}{' ' * (30 - filled)}] {step}/{self.total} "
      f"{rate:,.0f} ex/s loss {loss:.4f}"
    )
    self.stream.flush()

  def close(self) -> None:
    if self.enabled:
      self.stream.write("\n")
