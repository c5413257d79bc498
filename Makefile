# `make bench` (the article benchmark) and `make test`: both set up .venv from nothing.
# `make test-matrix`: the suite on every supported stack; `make gpu-bundle`: the GPU check's offline bundle.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Empty: the driver's default, the official archive downloaded once into the cache (~/.cache/seqclf).
IMDB ?= $(or $(SEQCLF_IMDB),$(wildcard ../shared/data/aclImdb_labeled.tar.gz))
WORKDIR ?= runs/article
BENCH_ARGS ?=
# Extras `make test` installs; add `peers` (PyTorch, Keras) to run the peer tests instead of skipping them.
TEST_EXTRAS ?= test

.PHONY: bench test venv clean test-matrix gpu-bundle

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

# The support range (pyproject.toml). The default stack is `make test`'s; the other two run on Python 3.12
# (pyenv's), each in its own venv built from nothing: the GPU machine's jax 0.11.2, and the newest jax pip
# resolves. They install `.[test]` without `peers` (torch's wheels are large; the default stack runs them).
PYTHON312 ?= PYENV_VERSION=3.12.1 python3.12
STACKS := py312-jax0112 py312-latest
PINS_py312-jax0112 := jax==0.11.2 jaxlib==0.11.2
PINS_py312-latest :=

# Kept after a run: make would otherwise delete a pattern rule's stamp as an intermediate file.
.PRECIOUS: .venv-%/.installed
.venv-%/.installed: pyproject.toml
	rm -rf .venv-$*
	$(PYTHON312) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet -e '.[test]' $(PINS_$*)
	touch $@

test-stack-%: .venv-%/.installed
	.venv-$*/bin/python -c "import sys, jax, flax; print('stack $*: Python', sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__)"
	.venv-$*/bin/python -m pytest -q

test-matrix: test $(addprefix test-stack-,$(STACKS))

# The offline bundle for benchmarks/gpu_check.sh (docs/gpu.md): what a GPU machine without network needs
# beside the repository, built on any machine with network. Its wheels target Python 3.12 on manylinux
# x86_64 and hold what an image with jax, flax, optax, absl-py and PyYAML lacks: ml-collections (add
# wheels with GPU_WHEELS="ml-collections==1.1.0 NAME==VERSION"); plus the IMDB archive (IMDB above, or
# SEQCLF_IMDB). tfds, tensorboardX and matplotlib are extras the check does not use.
GPU_BUNDLE ?= gpu-bundle
GPU_WHEELS ?= ml-collections==1.1.0
GPU_IMDB ?= $(IMDB)
WHEEL_PLATFORMS := $(addprefix --platform ,manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)

gpu-bundle:
	@test -f "$(GPU_IMDB)" || { echo "error: no IMDB archive at '$(GPU_IMDB)': set SEQCLF_IMDB=path/to/aclImdb_labeled.tar.gz"; exit 2; }
	rm -rf $(GPU_BUNDLE)
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  $(WHEEL_PLATFORMS) -d $(GPU_BUNDLE) $(GPU_WHEELS)
	cp $(GPU_IMDB) $(GPU_BUNDLE)/aclImdb_labeled.tar.gz
	@du -sh $(GPU_BUNDLE); ls $(GPU_BUNDLE)

clean:
	rm -rf $(VENV) $(addprefix .venv-,$(STACKS)) $(GPU_BUNDLE) runs .pytest_cache
