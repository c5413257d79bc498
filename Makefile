# `make bench` (the article benchmark) and `make test`: both set up .venv from nothing.
# `make test-matrix`: the suite on every supported stack; `make gpu-bundle`: the GPU check's offline bundle.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Empty: the driver's default, the official archive downloaded once into the cache (~/.cache/seqclf).
IMDB ?= $(SEQCLF_IMDB)
WORKDIR ?= runs/article
BENCH_ARGS ?=
# Extras `make test` installs; add `peers` (PyTorch, Keras) to run the peer tests instead of skipping them.
TEST_EXTRAS ?= test
# pytest-xdist: a worker per core, at most 4 (each holds its own jax, compiled functions and driver
# processes), whole test files per worker so module fixtures are built once; TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= auto --maxprocesses=4
PYTEST = -m pytest -q -n $(TEST_WORKERS) --dist=loadfile

.PHONY: bench test venv clean test-matrix gpu-bundle micro

$(VENV)/.installed-%: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[$*]'
	touch $@

venv: $(VENV)/.installed-test

# The tutorial's table (4 variants x 3 seeds) on whatever device JAX finds; IMDB from $SEQCLF_IMDB (a path
# or URL), else downloaded. A mirror: SEQCLF_IMDB=http://host/aclImdb.tar.gz BENCH_ARGS=--imdb_sha256=HEX
bench: $(VENV)/.installed-test
	$(PY) -m seqclf.benchmarks.article $(if $(IMDB),--imdb=$(IMDB)) --workdir=$(WORKDIR) $(BENCH_ARGS)

test: $(VENV)/.installed-$(TEST_EXTRAS)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) $(PYTEST)

# The support range (pyproject.toml). The default stack is `make test`'s; the others each get their own
# venv built from nothing: Python 3.12 with jax 0.11.2 and with the newest jax pip resolves, and Python
# 3.13 with the newest jax. They install `.[test]` without `peers` (torch's wheels are large; the default
# stack runs them). PYTHON312 / PYTHON313: the interpreters (pyenv's by default).
PYTHON312 ?= PYENV_VERSION=3.12.1 python3.12
PYTHON313 ?= PYENV_VERSION=3.13.0 python3.13
STACKS := py312-jax0112 py312-latest py313-latest
PINS_py312-jax0112 := jax==0.11.2 jaxlib==0.11.2
PINS_py312-latest :=
PINS_py313-latest :=
PYTHON_py312-jax0112 = $(PYTHON312)
PYTHON_py312-latest = $(PYTHON312)
PYTHON_py313-latest = $(PYTHON313)

# Kept after a run: make would otherwise delete a pattern rule's stamp as an intermediate file.
.PRECIOUS: .venv-%/.installed
.venv-%/.installed: pyproject.toml
	rm -rf .venv-$*
	$(PYTHON_$*) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet -e '.[test]' $(PINS_$*)
	touch $@

# STACK_TESTS: test files to run instead of the whole suite (CI's subset for a second stack of one jax);
# STACK_ARGS: more pytest arguments (CI's `-m "not slow"`: the slow tests run once, on the default stack).
STACK_TESTS ?=
STACK_ARGS ?=
test-stack-%: .venv-%/.installed
	.venv-$*/bin/python -c "import sys, jax, flax; print('stack $*: Python', sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__)"
	.venv-$*/bin/python $(PYTEST) $(STACK_ARGS) $(STACK_TESTS)

test-matrix: test $(addprefix test-stack-,$(STACKS))

# The micro-benchmarks in benchmarks/micro/ at smoke sizes (CI runs this; the published figures and their
# full commands are in benchmarks/results/*/). fixed_vs_bucketed needs the IMDB archive: $SEQCLF_IMDB.
ACCURACY := benchmarks/results/2026-12-01_cpu-xeon-2core_accuracy-over-seeds
micro: $(VENV)/.installed-test
	$(PY) benchmarks/micro/kernel_precisions.py --shape=2,8,3,4 --repeats=1
	$(PY) benchmarks/micro/cpu_kernel_ab.py --baseline=HEAD --shape=2,8,3,4 --repeats=1 --calls=1
	$(PY) benchmarks/micro/accuracy_over_seeds.py "float32=$(ACCURACY)/float32_seeds*" "bfloat16=$(ACCURACY)/bfloat16_seeds0-9"
	$(PY) benchmarks/micro/lstm_seed_table.py
	$(if $(SEQCLF_IMDB),$(PY) benchmarks/micro/fixed_vs_bucketed.py --imdb=$(SEQCLF_IMDB) --train_examples=64 --maxlen=40 --buckets=2,@echo "fixed_vs_bucketed skipped: set SEQCLF_IMDB")

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
