# Two commands: `make bench` (the article benchmark) and `make test`. Both set up .venv from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
IMDB ?= $(or $(SEQCLF_IMDB),$(wildcard ../shared/data/aclImdb_labeled.tar.gz),tfds)
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

# The tutorial's table on whatever device JAX finds (IMDB from $SEQCLF_IMDB, ../shared, or tfds).
bench: $(VENV)/.installed-test
	$(PY) -m benchmarks.article --imdb=$(IMDB) --workdir=$(WORKDIR) $(BENCH_ARGS)

test: $(VENV)/.installed-$(TEST_EXTRAS)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
