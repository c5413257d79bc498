#!/usr/bin/env bash
# The prepared one-shot GPU check: everything in one call of the device tool, nothing to prepare there.
#
#   here:       make gpu-wheels      # .whl/: the wheels the GPU machine lacks + the IMDB archive (< 64 MiB)
#   on the GPU: the device tool's `run` with carry=[".whl"] and
#               command="bash benchmarks/gpu_check.sh", timeout_s=540
#
# Steps, each under its own timeout, all within GPU_CHECK_BUDGET_S (default 450 s, under 8 minutes):
#   1. install   the carried wheels into /tmp/site, no index (PYTHONPATH points there)
#   2. preflight versions and devices; every driver imports
#   3. tests     the engine equality tests and lowering tests on the GPU itself (no interpret mode)
#   4. sweep     seqclf.benchmarks.lstm_engines: every engine that claims the platform, beside flax and torch
#   5. mosaic    seqclf.benchmarks.mosaic_sweep: the mosaic engine's cluster sizes x precisions, us per step
#   6. article   one epoch of lstm and cnn_lstm per engine beside PyTorch (cuDNN's LSTM on a GPU)
# It writes at most 8 files under $OUT (summary.txt, log.txt, lstm_engines.json/.md, mosaic_sweep.json/.md,
# article.json/.md) and ends by printing one table: step | status | seconds | detail.
#
# CPU dry run (CI, tests/test_gpu_check.py): JAX_PLATFORMS=cpu gives tiny sizes and reports the GPU-only
# step (tests) as skipped, so a broken import or flag shows here, not on the device.
# Environment: OUT (default runs/gpu_check), WHEELS (.whl), IMDB (.whl/aclImdb_labeled.tar.gz),
# PYTHON (python3), GPU_CHECK_BUDGET_S (450).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-runs/gpu_check}
WHEELS=${WHEELS:-.whl}
IMDB=${IMDB:-$WHEELS/aclImdb_labeled.tar.gz}
PYTHON=${PYTHON:-python3}
BUDGET_S=${GPU_CHECK_BUDGET_S:-450}
WORK=$(mktemp -d)  # drivers' workdirs (caches, vocabularies, logs); only chosen files go to $OUT
mkdir -p "$OUT"
LOG=$OUT/log.txt
: >"$LOG"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
START=$SECONDS
ROWS=()

# step NAME LIMIT_S DETAIL COMMAND...: runs COMMAND under `timeout`, within what is left of the budget.
step() {
  local name=$1 limit=$2 detail=$3
  shift 3
  local left=$((BUDGET_S - (SECONDS - START)))
  ((limit > left)) && limit=$left
  if ((limit < 5)); then
    ROWS+=("$name|skipped|0|out of budget ($BUDGET_S s)")
    return
  fi
  echo "=== $name (limit ${limit}s): $*" >>"$LOG"
  local begin=$SECONDS status
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  case $rc in
    0) status=ok ;;
    124) status="TIMEOUT (${limit}s)" ;;
    *) status="FAIL (exit $rc)" ;;
  esac
  ROWS+=("$name|$status|$((SECONDS - begin))|$detail")
}

skip() { ROWS+=("$1|skipped|0|$2"); }

# 1. The carried wheels (make gpu-wheels), installed without an index: the GPU machine reaches nothing.
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  step install 60 "$(ls "$WHEELS"/*.whl | xargs -n1 basename | cut -d- -f1 | paste -sd, -)" \
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site:$PYTHONPATH
else
  skip install "no wheels in $WHEELS (make gpu-wheels)"
fi

# 2. What this machine runs, and whether every driver imports (one process each: each defines --config).
PLATFORM=$("$PYTHON" -c "import jax; print(jax.default_backend())" 2>>"$LOG") || PLATFORM=none
step preflight 60 "platform $PLATFORM" bash -c "
  '$PYTHON' -c 'import sys, jax, jaxlib, flax, optax; print(sys.version.split()[0], \"jax\", jax.__version__, \"jaxlib\", jaxlib.__version__, \"flax\", flax.__version__, \"optax\", optax.__version__); print(jax.devices())' &&
  for module in seqclf.main seqclf.benchmarks.article seqclf.benchmarks.lstm_engines seqclf.benchmarks.scaling; do
    '$PYTHON' -c \"import \$module\" || exit 1
  done"

# Engines that claim this platform (seqclf.lstm.ENGINES), and the peer present. The sweep times the flax
# baseline engine too; the article step leaves it out for time (its GPU epoch is known: 9.25 s).
ENGINES=$("$PYTHON" -c "
from seqclf.lstm import ENGINES
print(','.join(n for n, e in ENGINES.items() if '$PLATFORM' in e.platforms and n != 'flax'))" 2>>"$LOG")
PEERS=
"$PYTHON" -c "import torch" 2>/dev/null && PEERS=torch
ARTICLE_PEERS=$PEERS

if [[ $PLATFORM == gpu ]]; then
  SWEEP_SIZES=(--batch_sizes=64,256 --steps=500 --hidden_sizes=100,256 --repeats=3)
  ARTICLE_SIZES=(--epochs=1)
  TESTS=(tests/test_lstm_api.py tests/test_pallas_gpu.py tests/test_cudnn.py tests/test_lowering.py)
  TESTS+=($(compgen -G "tests/test_mosaic*.py"))
  # 3. On the GPU the Pallas kernels run for real (interpret mode is for CPU hosts only).
  step tests 120 "${TESTS[*]}" "$PYTHON" -m pytest -q -rs -p no:cacheprovider "${TESTS[@]}"
else
  # Tiny sizes: checks the steps' imports and flags, not speed.
  ENGINES=$(echo "$ENGINES" | tr , '\n' | grep -v -e pallas -e mosaic | paste -sd, -)  # interpreters: slow, tested apart
  SWEEP_SIZES=(--batch_sizes=2 --steps=3 --hidden_sizes=4 --input_size=4 --repeats=1)
  ARTICLE_SIZES=(--epochs=1 --config.maxlen=16 --config.top_words=60 --config.batch_size=4
    --config.eval_batch_size=4 --config.model.embed_dim=4 --config.model.lstm_features=4)
  skip tests "GPU only (platform $PLATFORM)"
fi

# 4. The engine sweep, side by side in one process.
step sweep 75 "engines $ENGINES,flax; peers ${PEERS:-none}" \
  "$PYTHON" -m seqclf.benchmarks.lstm_engines --engines="$ENGINES,flax" --peers="$PEERS" "${SWEEP_SIZES[@]}" \
  --workdir="$WORK/sweep"
cp "$WORK"/sweep/lstm_engines.{json,md} "$OUT"/ 2>/dev/null

# 5. The mosaic engine's configurations (cluster size x matmul_precision), best predicted first, each
#    checked against fused; rows are written as they finish, so a timeout keeps the ones before it.
MOSAIC_UNAVAILABLE=$("$PYTHON" -c "from seqclf.lstm import mosaic_gpu; print(mosaic_gpu.unavailable_reason() or '')" 2>>"$LOG")
if [[ -n $MOSAIC_UNAVAILABLE ]]; then
  skip mosaic "$MOSAIC_UNAVAILABLE"
else
  if [[ $PLATFORM == gpu ]]; then
    MOSAIC_SIZES=(--batch=64 --steps=500 --repeats=3)
  else
    MOSAIC_SIZES=(--cluster_sizes=1 --precisions=bfloat16 --batch=2 --steps=2 --input_size=4 --hidden=4 --repeats=1)
  fi
  step mosaic 60 "N x precision, fwd and fwd+bwd us/step" \
    "$PYTHON" -m seqclf.benchmarks.mosaic_sweep "${MOSAIC_SIZES[@]}" --workdir="$WORK/mosaic"
  cp "$WORK"/mosaic/mosaic_sweep.{json,md} "$OUT"/ 2>/dev/null
fi

# 6. The article's epoch per engine, beside the peers, in one invocation (same data and order for all).
if [[ -f $IMDB ]]; then
  step article 180 "lstm,cnn_lstm; engines $ENGINES; peers ${ARTICLE_PEERS:-none}" \
    "$PYTHON" -m seqclf.benchmarks.article --imdb="$IMDB" --variants=lstm,cnn_lstm --seeds=0 --engine="$ENGINES" \
    ${ARTICLE_PEERS:+--peers=$ARTICLE_PEERS} "${ARTICLE_SIZES[@]}" --tensorboard=false --workdir="$WORK/article"
  cp "$WORK/article/results.json" "$OUT/article.json" 2>/dev/null
  cp "$WORK/article/results.md" "$OUT/article.md" 2>/dev/null
else
  skip article "no IMDB archive at $IMDB (make gpu-wheels)"
fi
rm -rf "$WORK"

{
  for table in "$OUT/lstm_engines.md" "$OUT/mosaic_sweep.md" "$OUT/article.md"; do
    [[ -f $table ]] && printf '%s\n\n' "$(basename "$table")" && cat "$table" && echo
  done
  echo "gpu_check: platform $PLATFORM, $((SECONDS - START)) s of $BUDGET_S s; full output in $LOG"
  echo
  echo "| step | status | s | detail |"
  echo "|---|---|---|---|"
  for row in "${ROWS[@]}"; do
    IFS='|' read -r name status seconds detail <<<"$row"
    echo "| $name | $status | $seconds | $detail |"
  done
} | tee "$OUT/summary.txt"
! grep -qE '\| (FAIL|TIMEOUT)' "$OUT/summary.txt"
