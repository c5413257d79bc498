"""The ``fused`` engine: hoisted input projection and weight gradients around a lean `lax.scan`.

Compared with the reference (`scan.py`) the loop body holds only the recurrent matmul, with all four gates
in one [B, H] x [H, 4H] product, and the backward pass is a hand-written reverse scan (the custom VJP in
`hoisted.py`; its loops are `hoisted.scan_recurrence`, which every kernel's reference shares) that stores
the activated gates instead of re-deriving them and leaves every weight gradient to one large matmul after
the loop. Without a gradient (evaluation, prediction) it runs the reference cell.
"""

from seqclf.lstm import hoisted, scan

# Steps per loop iteration. On CPU unrolling measured slower (B=64, T=500, H=100: 1 step 46-67 ms,
# 4 steps 57-84 ms per forward), so the default is no unrolling.
UNROLL = 1


# Without a gradient the reference cell is the fastest forward on CPU (B=64, T=500, H=100: 50 ms against
# 132 ms for the hoisted forward, whose [T*B, 32] x [32, 400] projection XLA's CPU matmul runs poorly).
RECURRENCE = hoisted.scan_recurrence(scan.matmul, unroll=UNROLL, inference=scan.lstm)
lstm = hoisted.make_lstm(RECURRENCE)
