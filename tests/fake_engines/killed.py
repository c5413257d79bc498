"""An engine whose process dies of a signal, as one whose kernel faults on an illegal address."""

import os
import signal


def lstm(*args):
  os.kill(os.getpid(), signal.SIGSEGV)
