"""`seqclf.progress`: the progress line shows on a terminal only, every 10 steps and at the end."""

import io

import numpy as np

from seqclf.progress import Progress


class Terminal(io.StringIO):
  def isatty(self):
    return True


def metrics(loss_sum, count):
  return {"loss_sum": np.float32(loss_sum), "count": np.float32(count), "correct": np.float32(0)}


def test_shows_every_ten_steps_and_the_last_with_the_mean_loss():
  stream = Terminal()
  progress = Progress("lstm epoch 1/3", total_steps=25, batch_size=4, stream=stream)
  for step in range(1, 26):
    progress.update(step, metrics(0.5 * step * 4, step * 4))
  progress.close()
  lines = stream.getvalue().split("\r")[1:]
  assert [line.split("] ")[1].split()[0] for line in lines] == ["10/25", "20/25", "25/25"]
  assert lines[-1].startswith("lstm epoch 1/3 [" + "=" * 30 + "]") and "loss 0.5000\n" in lines[-1]


def test_silent_when_not_a_terminal():
  stream = io.StringIO()
  progress = Progress("x", total_steps=10, batch_size=1, stream=stream)
  progress.update(10, metrics(1, 1))
  progress.close()
  assert stream.getvalue() == ""
