"""Faults on purpose, to rehearse `benchmarks/gpu_check.sh` where nothing goes wrong by itself (on CPU).

A GPU check meets kernels that raise, hang in a barrier wait or kill their process with a GPU fault; the
check must survive each. ``SEQCLF_GPU_CHECK_FAULTS`` names units of work and what goes wrong in them, as
comma-separated ``UNIT=KIND`` pairs, UNIT being what a driver passes to `inject` (`unit` spells it):

  SEQCLF_GPU_CHECK_FAULTS="mosaic_sweep N=1 bfloat16=hang,lstm_engines fused B2 T3 H4=raise"

KIND: ``raise`` (a RuntimeError, as a compiler's refusal), ``hang`` (blocks forever and ignores SIGINT,
as a process waiting on the device does), ``signal`` (the process kills itself with SIGSEGV, as a GPU
fault does). Unset, `inject` does nothing.
"""

import os
import signal
import sys
import time

from seqclf.errors import ConfigError

ENV = "SEQCLF_GPU_CHECK_FAULTS"
KINDS = ("raise", "hang", "signal")


def planned() -> dict[str, str]:
  """{unit: kind} from the environment."""
  faults = {}
  for item in filter(None, (part.strip() for part in os.environ.get(ENV, "").split(","))):
    unit, _, kind = item.rpartition("=")
    if kind not in KINDS or not unit:
      raise ConfigError(f"{ENV}: {item!r} is not UNIT=KIND with KIND one of {', '.join(KINDS)}")
    faults[unit] = kind
  return faults


def unit(*parts) -> str:
  """A unit's name from its parts: ``unit("mosaic_sweep", "N=1", "bfloat16")``."""
  return " ".join(str(part) for part in parts)


def inject(name: str) -> None:
  """Makes the fault planned for unit ``name`` happen, if any."""
  kind = planned().get(name)
  if kind is None:
    return
  print(f"injected fault: {name}={kind}", file=sys.stderr, flush=True)
  if kind == "raise":
    raise RuntimeError(f"injected fault in {name}")
  if kind == "signal":
    os.kill(os.getpid(), signal.SIGSEGV)
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  while True:
    time.sleep(60)
