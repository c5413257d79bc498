"""``python -m benchmarks.compare``: see the package docstring."""

from benchmarks.compare import run

run()
