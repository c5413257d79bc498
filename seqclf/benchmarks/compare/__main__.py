"""``python -m seqclf.benchmarks.compare``: see the package docstring."""

from seqclf.benchmarks.compare import run

run()
