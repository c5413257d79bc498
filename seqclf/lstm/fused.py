"""The ``fused`` engine: hoisted input projection and weight gradients around a lean `lax.scan`.

Compared with the reference (`scan.py`) the loop body holds only the recurrent matmul, with all four gates
in one [B, H] x [H, 4H] product, and the backward pass is a hand-written reverse scan (the custom VJP in
`hoisted.py`; its loops are `hoisted.scan_recurrence`, which every kernel's reference shares) that stores
the activated gates instead of re-deriving them and leaves every weight gradient to one large matmul after
the loop. Without a gradient (evaluation, prediction) it runs the reference cell, and with
``return_sequences=False`` that cell's loop without per-step outputs (`scan.final_state`).
"""

import functools

from seqclf.lstm import hoisted, scan

# Steps per loop iteration. On CPU unrolling measured slower (B=64, T=500, H=100: 1 step 46-67 ms,
# 4 steps 57-84 ms per forward), so the default is no unrolling.
UNROLL = 1


# Without a gradient the reference cell is the fastest forward on CPU (B=64, T=500, H=100: 50 ms against
# 132 ms for the hoisted forward, whose [T*B, 32] x [32, 400] projection XLA's CPU matmul runs poorly).
# One custom-VJP LSTM per gate activation of `scan.RECURRENT_ACTIVATIONS`.
_LSTMS = {
  name: hoisted.make_lstm(
    hoisted.scan_recurrence(
      scan.matmul,
      unroll=UNROLL,
      inference=functools.partial(scan.lstm, recurrent_activation=name),
      final_state=functools.partial(scan.final_state, recurrent_activation=name),
      recurrent_activation=name,
    )
  )
  for name in scan.RECURRENT_ACTIVATIONS
}


def lstm(
  params,
  xs,
  h0,
  c0,
  step_mask,
  input_dropout_mask,
  recurrent_dropout_mask,
  *,
  recurrent_activation="sigmoid",
  return_sequences=True,
):
  """The engine signature of `seqclf.lstm.api`, with the gates' ``recurrent_activation`` and
  ``return_sequences`` (False: ``(h, (h, c))``, no per-step outputs stored)."""
  return _LSTMS[recurrent_activation](
    params,
    xs,
    h0,
    c0,
    step_mask,
    input_dropout_mask,
    recurrent_dropout_mask,
    return_sequences=return_sequences,
  )
