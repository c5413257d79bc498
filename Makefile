# Two commands: `make bench` (the article benchmark) and `make test`. Both set up .venv from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Empty: the driver's default, the official archive downloaded once into the cache (~/.cache/seqclf).
IMDB ?= $(or $(SEQCLF_IMDB),$(wildcard ../shared/data/aclImdb_labeled.tar.gz))
WORKDIR ?= runs/article
BENCH_ARGS ?=
# Extras `make test` installs; CI adds `peers` (PyTorch, Keras) so the peer tests run instead of skipping.
TEST_EXTRAS ?= test

.PHONY: bench test venv clean

$(VENV)/.installed-%: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[$*]'
	touch $@

venv: $(VENV)/.installed-test

# The tutorial's table (4 variants x 3 seeds) on whatever device JAX finds; IMDB from $SEQCLF_IMDB (a path
# or URL), ../shared, or downloaded. A mirror: SEQCLF_IMDB=http://host/aclImdb.tar.gz BENCH_ARGS=--imdb_sha256=HEX
bench: $(VENV)/.installed-test
	$(PY) -m benchmarks.article $(if $(IMDB),--imdb=$(IMDB)) --workdir=$(WORKDIR) $(BENCH_ARGS)

test: $(VENV)/.installed-$(TEST_EXTRAS)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
