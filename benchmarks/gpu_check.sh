#!/usr/bin/env bash
# The one-shot GPU check: does everything the project claims for a GPU hold on this one, and how fast is
# it? In about 7 minutes, compile included, with no network needed. How to run it: docs/gpu.md.
#
#   bash benchmarks/gpu_check.sh [OUTPUT_DIR]
#
# Steps, most valuable first, each shown with its time limit before it runs (the preflight's at the start,
# the others' once the preflight has told what this machine is); the plan and its limits are
# seqclf/benchmarks/gpu_plan.py, whose planned steps' limits, with the install's and the preflight's, fit
# the budget:
#   install    the offline bundle's wheels (make gpu-bundle) into a temporary directory, no index
#   preflight  nvidia-smi; Python/jax/jaxlib/CUDA plugin versions; the devices and their compute
#              capability; the CUDA root and ptxas Mosaic GPU will use (CUDA_ROOT=/usr/local/cuda is set
#              for every later step when jax found no ptxas and that has one); the mosaic engine's
#              availability; the drivers import
#   smoke      a 10-line Mosaic GPU kernel compiled, run and checked
#   pingpong   a ring over an 8-CTA cluster (TMA, mbarriers, wgmma, remote stores, cluster barriers),
#              checked exactly; if it does not pass, every later mosaic step is skipped with that reason
#   exchange   seqclf.benchmarks.mosaic_exchange: the N = 8 all-gather alone, us/step per call pattern
#              beside the cost model's range for the exchange term
#   mosaic     seqclf.benchmarks.mosaic_sweep at N = 8 float32 with the batch-split forward, the engine's
#              default (ptxas report and SASS kept in OUTPUT_DIR/mosaic_dump)
#   article    one epoch of lstm and cnn_lstm, device-resident (the epoch's batches on the device, no host
#              round trip per step): mosaic, then cudnn beside PyTorch
#   then, while the budget lasts: N = 8 float32 with the "units" forward, the mosaic and pallas engines'
#   equality tests on the GPU itself, the other mosaic configurations (both layouts at N = 8), the engine sweep (one shape per process), the article
#   epoch for pallas and fused and with host-fed batches, the api tests.
#
# Isolation: every step, configuration and shape is its own process under its own limit (`timeout -s INT
# -k KILL_AFTER`: SIGINT first, so pytest and the drivers still report what they have; SIGKILL
# KILL_AFTER s later for a process stuck in a device wait). A fault, hang or kill costs that step only.
# Results are written as they come: summary.md and summary.json after every step (the step in flight
# shows as RUNNING), the drivers' merged results after every configuration and shape, so a kill of this
# script itself keeps what finished. OUTPUT_DIR gets at most 7 files and a folder: summary.md (the step
# table, then each driver's table), summary.json, log.txt (every step's output), mosaic_exchange.json,
# mosaic_sweep.json, article.json, lstm_engines.json, mosaic_dump/. The exit status is 0 when no step
# failed, timed out or crashed.
#
# Off a GPU (JAX_PLATFORMS=cpu) the same script is its own rehearsal: tiny sizes, the GPU-only steps
# skipped, the Pallas and Mosaic kernels in their interpreters (the engines' own choice off a GPU; the
# ping-pong and the exchange, which need remote stores the interpreter lacks, lowered for CUDA); with
# SEQCLF_GPU_CHECK_FAULTS (seqclf/benchmarks/faults.py) it proves that a hang, an exception and a signal in a
# step each cost that step only (tests/test_gpu_check.py).
#
# Environment:
#   OUTPUT_DIR                    the argument, else SEQCLF_GPU_CHECK_OUT, else OUT, else runs/gpu_check
#                                 in the repository
#   SEQCLF_GPU_CHECK_BUNDLE       the offline bundle (default: the repository's gpu-bundle), wheels and
#                                 the IMDB archive
#   SEQCLF_IMDB                   the IMDB archive (path or URL) when the bundle has none
#   PYTHON                        the interpreter (default python3)
#   SEQCLF_GPU_CHECK_BUDGET_S     wall-time budget of all steps (default 420)
#   SEQCLF_GPU_CHECK_LIMITS       per-step limits over the defaults, "STEP=SECONDS,..." (STEP as printed)
#   SEQCLF_GPU_CHECK_KILL_AFTER_S SIGKILL this long after a step's SIGINT (default 10)
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
# Paths given are the caller's (relative to where the check was started); defaults are the repository's.
absolute() { [[ $1 == /* || $1 == *://* ]] && echo "$1" || echo "$PWD/$1"; }
OUTPUT_DIR=$(absolute "${1:-${SEQCLF_GPU_CHECK_OUT:-${OUT:-$REPO/runs/gpu_check}}}")
BUNDLE=$(absolute "${SEQCLF_GPU_CHECK_BUNDLE:-$REPO/gpu-bundle}")
IMDB=${SEQCLF_IMDB:+$(absolute "$SEQCLF_IMDB")}
cd "$REPO" || exit 2
PYTHON=${PYTHON:-python3}
# The rehearsal on a CPU (JAX_PLATFORMS=cpu) runs interpreted kernels on a shared host: 4 x the limits.
[[ ${JAX_PLATFORMS:-} == cpu ]] && SCALE=4 || SCALE=1
BUDGET_S=${SEQCLF_GPU_CHECK_BUDGET_S:-$(($(PYTHONPATH=$REPO "$PYTHON" -m seqclf.benchmarks.gpu_plan budget) * SCALE))}
KILL_AFTER_S=${SEQCLF_GPU_CHECK_KILL_AFTER_S:-10}
LIMITS=${SEQCLF_GPU_CHECK_LIMITS:-}
# A step with less than this left of the budget is skipped rather than started.
MIN_STEP_S=5
# Per-test limit for pytest (pytest-timeout): one test that hangs fails alone.
TEST_TIMEOUT_S=60

# The limits of the steps before the plan (seqclf/benchmarks/gpu_plan.py: the planned steps' limits and
# these add up within the budget).
declare -A FIRST
while IFS='|' read -r name limit; do FIRST[$name]=$limit; done < <(PYTHONPATH=$REPO "$PYTHON" -m seqclf.benchmarks.gpu_plan first)

mkdir -p "$OUTPUT_DIR" || exit 2
WORK=$(mktemp -d)  # the drivers' workdirs, caches and per-step logs; only chosen files reach OUTPUT_DIR
LOG=$OUTPUT_DIR/log.txt
: >"$LOG"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
START=$SECONDS
ROWS=()        # "step|status|seconds|limit|detail", finished steps
RUNNING=       # the step in flight, as a row
CHILD=         # its `timeout` process
PLATFORM=unknown
DEVICE=unknown
SECTIONS=()    # "title|markdown file" of the results' tables, in the order they first appear

clean() { tr '\t' ' ' | tr -d '\000-\010\013-\037' | tr '|\n' '/ ' | cut -c1-"${1:-240}"; }

json_string() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

# The summary, rewritten whole (temporary file, then rename) after every change.
write_summary() {
  local finished=${1:-false} row name status seconds limit detail first=1 section
  {
    echo "# GPU check"
    echo
    echo "platform $PLATFORM; $DEVICE; $((SECONDS - START)) s of a $BUDGET_S s budget;" \
      "$([[ $finished == true ]] && echo finished || echo 'not finished')"
    echo
    echo "| step | status | s | limit s | detail |"
    echo "|---|---|---|---|---|"
    for row in "${ROWS[@]}" ${RUNNING:+"$RUNNING"}; do
      IFS='|' read -r name status seconds limit detail <<<"$row"
      echo "| $name | $status | $seconds | $limit | $detail |"
    done
    for section in "${SECTIONS[@]}"; do
      if [[ -s ${section#*|} ]]; then
        printf '\n## %s\n\n' "${section%%|*}"
        cat "${section#*|}"
      fi
    done
  } >"$OUTPUT_DIR/.summary.md.tmp" && mv -f "$OUTPUT_DIR/.summary.md.tmp" "$OUTPUT_DIR/summary.md"
  {
    printf '{"platform": %s, "device": %s, "budget_s": %s, "elapsed_s": %s, "finished": %s, "steps": [' \
      "$(json_string "$PLATFORM")" "$(json_string "$DEVICE")" "$BUDGET_S" "$((SECONDS - START))" "$finished"
    for row in "${ROWS[@]}" ${RUNNING:+"$RUNNING"}; do
      IFS='|' read -r name status seconds limit detail <<<"$row"
      ((first)) || printf ','
      first=0
      printf '\n {"step": %s, "status": %s, "seconds": %s, "limit_s": %s, "detail": %s}' \
        "$(json_string "$name")" "$(json_string "$status")" "$seconds" "$limit" "$(json_string "$detail")"
    done
    printf '\n]}\n'
  } >"$OUTPUT_DIR/.summary.json.tmp" && mv -f "$OUTPUT_DIR/.summary.json.tmp" "$OUTPUT_DIR/summary.json"
}

add_row() {  # NAME STATUS SECONDS LIMIT DETAIL
  ROWS+=("$1|$2|$3|$4|$(printf '%s' "$5" | clean 400)")
  RUNNING=
  write_summary
}

skip() { add_row "$1" skipped 0 0 "$2"; }

# The check itself killed (a machine's limit, ^C): the step in flight is marked, its process stopped.
interrupted() {
  local signal=$1
  if [[ -n $RUNNING ]]; then
    IFS='|' read -r name _ _ limit _ <<<"$RUNNING"
    [[ -n $CHILD ]] && kill -TERM "$CHILD" 2>/dev/null
    add_row "$name" "INTERRUPTED (check got SIG$signal)" $((SECONDS - STEP_BEGIN)) "$limit" "the check was stopped here"
  fi
  write_summary
  rm -rf "$WORK"
  exit 130
}
for signal in INT TERM HUP; do trap "interrupted $signal" "$signal"; done

limit_for() {  # NAME DEFAULT: the step's limit (SEQCLF_GPU_CHECK_LIMITS overrides)
  local item
  IFS=',' read -r -a items <<<"$LIMITS"
  for item in "${items[@]}"; do
    [[ ${item%=*} == "$1" ]] && echo "${item##*=}" && return
  done
  echo $(($2 * SCALE))
}

# Why a step's process ended, from `timeout`'s exit status.
status_of() {  # RC LIMIT ELAPSED
  local rc=$1 limit=$2 elapsed=$3
  if ((rc == 0)); then
    echo ok
  elif ((rc == 124)); then
    echo "TIMEOUT (${limit} s)"
  elif ((rc == 137 && elapsed >= limit)); then
    echo "TIMEOUT (${limit} s, SIGKILL after ${KILL_AFTER_S} s more)"
  elif ((rc > 128)); then
    echo "CRASH (SIG$(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128))))"
  else
    echo "FAIL (exit $rc)"
  fi
}

# run NAME LIMIT DETAIL COMMAND...: COMMAND in its own process under its limit (within the budget left),
# its output appended to log.txt and kept in $STEP_LOG; sets STATUS. The row's detail: DETAIL, then
# what the output says (pytest's last line, a driver's error rows, the error that ended it).
run() {
  local name=$1 limit=$2 detail=$3
  shift 3
  limit=$(limit_for "$name" "$limit")
  local left=$((BUDGET_S - (SECONDS - START)))
  ((limit > left)) && limit=$left
  if ((limit < MIN_STEP_S)); then
    STATUS=skipped STEP_LOG=/dev/null
    add_row "$name" skipped 0 0 "out of budget ($BUDGET_S s)"
    return
  fi
  STEP_LOG=$WORK/step.log
  STEP_BEGIN=$SECONDS
  RUNNING="$name|RUNNING|0|$limit|started at +$((SECONDS - START)) s"
  write_summary
  echo "=== $name (limit ${limit} s, +$((SECONDS - START)) s): $*" >>"$LOG"
  timeout -s INT -k "$KILL_AFTER_S" "$limit" "$@" >"$STEP_LOG" 2>&1 &
  CHILD=$!
  wait "$CHILD"
  local rc=$?
  CHILD=
  cat "$STEP_LOG" >>"$LOG"
  local elapsed=$((SECONDS - STEP_BEGIN))
  STATUS=$(status_of "$rc" "$limit" "$elapsed")
  local said errors
  said=$(grep -E '^(=+ .*(passed|failed|error).* =+|[0-9]+ (passed|failed).*)$' "$STEP_LOG" | tail -1)
  errors=$(grep -c '^ERROR ' "$STEP_LOG")
  if [[ $STATUS == ok ]] && ((errors > 0)); then
    STATUS="ok, $errors error row$( ((errors > 1)) && echo s)"
    said="$said $(grep -m1 '^ERROR ' "$STEP_LOG" | cut -c7-)"
  elif [[ $STATUS != ok ]]; then
    said="$said $(grep -E '^(error|Error|[A-Za-z.]*(Error|Exception)|injected fault|E  )' "$STEP_LOG" | tail -1)"
  fi
  said=$(echo "$said" | clean 180 | sed 's/^ *//; s/ *$//')
  add_row "$name" "$STATUS" "$elapsed" "$limit" "$detail${said:+; $said}"
}

# A probe: run, and the step's output becomes its detail (its lines are short `key: value`s).
probe() {  # NAME LIMIT COMMAND...
  local name=$1 limit=$2
  shift 2
  run "$name" "$limit" "" "$@"
  local last=${ROWS[-1]}
  IFS='|' read -r _ status seconds limit _ <<<"$last"
  unset 'ROWS[-1]'
  add_row "$name" "$status" "$seconds" "$limit" \
    "$(grep -v -e '^CUDA_ROOT=' -e Warning "$STEP_LOG" | awk 'NR > 1 { printf "; " } { printf "%s", $0 }')"
}

add_section() {  # TITLE FILE: a table for the summary, once
  local section
  for section in "${SECTIONS[@]}"; do [[ $section == "$1|$2" ]] && return; done
  SECTIONS+=("$1|$2")
}

# merge KIND TITLE PARTS...: the parts' results files (those that exist) as OUTPUT_DIR/KIND.json and, with
# a TITLE, their tables as one in the summary.
merge() {
  local kind=$1 title=$2
  shift 2
  local table=$WORK/$kind.md
  [[ -n $title ]] && add_section "$title" "$table"
  timeout -s INT -k 5 30 "$PYTHON" -m seqclf.benchmarks.merge_results --parts="$(
    IFS=,
    echo "$*"
  )" --merged="$OUTPUT_DIR/$kind.json" --merged_markdown="$table" >>"$LOG" 2>&1
  write_summary
}

write_summary
echo "gpu_check: output in $OUTPUT_DIR, budget $BUDGET_S s" | tee -a "$LOG"

# 1. The offline bundle (make gpu-bundle): wheels the machine lacks, installed without an index.
if compgen -G "$BUNDLE/*.whl" >/dev/null; then
  run install "${FIRST[install]}" "$(ls "$BUNDLE"/*.whl | xargs -n1 basename | cut -d- -f1 | paste -sd, -)" \
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
    "$BUNDLE"/*.whl
  export PYTHONPATH=$WORK/site:$PYTHONPATH
else
  skip install "no wheels in $BUNDLE (make gpu-bundle)"
fi
[[ -f $BUNDLE/aclImdb_labeled.tar.gz ]] && IMDB=$BUNDLE/aclImdb_labeled.tar.gz

# 2. Preflight: each question its own process, so a CUDA initialisation that hangs costs only itself.
echo "preflight limits: nvidia-smi $(limit_for "preflight nvidia-smi" "${FIRST[preflight nvidia-smi]}") s," \
  "versions $(limit_for "preflight versions" "${FIRST[preflight versions]}") s," \
  "devices $(limit_for "preflight devices" "${FIRST[preflight devices]}") s," \
  "cuda $(limit_for "preflight cuda" "${FIRST[preflight cuda]}") s," \
  "imports $(limit_for "preflight imports" "${FIRST[preflight imports]}") s" | tee -a "$LOG"
if command -v nvidia-smi >/dev/null; then
  probe "preflight nvidia-smi" "${FIRST[preflight nvidia-smi]}" nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,memory.used \
    --format=csv,noheader
else
  skip "preflight nvidia-smi" "no nvidia-smi on PATH"
fi
probe "preflight versions" "${FIRST[preflight versions]}" "$PYTHON" -m seqclf.benchmarks.gpu_probe versions
grep -q '^pytest-timeout: [0-9]' "$STEP_LOG" && HAS_PYTEST_TIMEOUT=1 || HAS_PYTEST_TIMEOUT=
grep -q '^torch: [0-9]' "$STEP_LOG" && PEERS=torch || PEERS=
probe "preflight devices" "${FIRST[preflight devices]}" "$PYTHON" -m seqclf.benchmarks.gpu_probe devices
PLATFORM=$(sed -n 's/^backend: //p' "$STEP_LOG" | tail -1)
DEVICE=$(grep -m1 '^device: ' "$STEP_LOG" | cut -d' ' -f3- | clean 80 | sed 's/ *$//')
if [[ -z $PLATFORM ]]; then  # JAX did not answer: trust nvidia-smi
  command -v nvidia-smi >/dev/null && PLATFORM=gpu || PLATFORM=cpu
  DEVICE="unknown (JAX did not answer)"
fi
MOSAIC_REASON=$(sed -n 's/^mosaic: //p' "$STEP_LOG")
[[ $MOSAIC_REASON == available ]] && MOSAIC=1 || MOSAIC=
probe "preflight cuda" "${FIRST[preflight cuda]}" "$PYTHON" -m seqclf.benchmarks.gpu_probe cuda
FIX=$(sed -n 's/^CUDA_ROOT=//p' "$STEP_LOG")
if [[ -n $FIX ]]; then
  export CUDA_ROOT=$FIX
  ROWS[-1]="${ROWS[-1]}; set CUDA_ROOT=$FIX for every later step"
fi
# The drivers the check runs (each defines its own flags, so one process each).
run "preflight imports" "${FIRST[preflight imports]}" "seqclf.benchmarks.article, lstm_engines, mosaic_sweep, mosaic_exchange" bash -c "
  for module in seqclf.benchmarks.article seqclf.benchmarks.lstm_engines seqclf.benchmarks.mosaic_sweep seqclf.benchmarks.mosaic_exchange; do
    '$PYTHON' -c \"import \$module\" || { echo \"error: import \$module failed\"; exit 1; }
  done"
write_summary

# The plan: what runs where, most valuable first (seqclf/benchmarks/gpu_plan.py). Sizes per platform here.
if [[ $PLATFORM == gpu ]]; then
  MOSAIC_SIZES=(--batch=64 --steps=500 --repeats=3)
  EXCHANGE_SIZES=(--steps=500 --repeats=5)
  SWEEP_SIZES=(--steps=500 --repeats=3)
  SWEEP_ENGINES=  # every engine that runs natively here, the flax baseline among them
  ARTICLE_SIZES=(--epochs=1)
else
  # Rehearsal: tiny sizes, interpreted kernels; the steps' processes, limits and files as on a GPU.
  MOSAIC_SIZES=(--batch=2 --steps=2 --input_size=4 --hidden=4 --repeats=1)
  EXCHANGE_SIZES=(--steps=4 --repeats=1)
  SWEEP_SIZES=(--steps=3 --input_size=4 --repeats=1)
  SWEEP_ENGINES=fused,flax
  ARTICLE_SIZES=(--epochs=1 --config=seqclf/configs/article_tiny.py)
fi
mapfile -t PLAN < <("$PYTHON" -m seqclf.benchmarks.gpu_plan "$([[ $PLATFORM == gpu ]] && echo gpu || echo cpu)" \
  "$([[ -n $MOSAIC ]] && echo 1 || echo 0)" "$([[ -n $IMDB ]] && echo 1 || echo 0)")
((${#PLAN[@]})) || { echo "error: seqclf.benchmarks.gpu_plan gave no plan" | tee -a "$LOG"; exit 2; }
[[ $PLATFORM == gpu ]] || skip tests "GPU only (platform $PLATFORM): the kernels' tests run interpreted in the suite"
[[ -n $MOSAIC ]] || skip mosaic "${MOSAIC_REASON:-mosaic availability unknown}"
[[ -z $IMDB ]] && skip article "no IMDB archive: make gpu-bundle, or set SEQCLF_IMDB"

{
  echo "plan ($((BUDGET_S - (SECONDS - START))) s of the budget left; planned steps get their whole limit, extras run while it lasts):"
  for entry in "${PLAN[@]}"; do
    IFS='|' read -r name limit _ kind <<<"$entry"
    printf '  %-34s %4s s  %s\n' "$name" "$(limit_for "$name" "$limit")" "$kind"
  done
} | tee -a "$LOG"

MOSAIC_PARTS=() SWEEP_PARTS=() ARTICLE_PARTS=()
NO_CLUSTERS=  # why the mosaic steps are skipped: the ping-pong did not come back right
for entry in "${PLAN[@]}"; do
  IFS='|' read -r name limit spec _ <<<"$entry"
  read -r -a args <<<"$spec"
  if [[ -n $NO_CLUSTERS ]]; then
    case $spec in
      exchange | mosaic* | "tests tests/test_mosaic_"* | "article mosaic resident")
        skip "$name" "$NO_CLUSTERS"
        continue
        ;;
      "article mosaic,"*) args[1]=${args[1]#mosaic,} ;;
    esac
  fi
  case ${args[0]} in
    smoke)
      run "$name" "$limit" "out = 2 x + 1 on a [64, 128] tile" "$PYTHON" -m seqclf.benchmarks.gpu_probe smoke
      ;;
    pingpong)
      run "$name" "$limit" "a ring over an 8-CTA cluster: TMA, wgmma, DSMEM stores, mbarriers, cluster barriers" \
        "$PYTHON" -m seqclf.benchmarks.gpu_probe pingpong
      ROWS[-1]="${ROWS[-1]}$(grep -m1 '^pingpong: ' "$STEP_LOG" | cut -d' ' -f2- | sed 's/^/; /' | clean 200)"
      write_summary
      [[ $STATUS == ok ]] || NO_CLUSTERS="the cluster ping-pong did not pass ($STATUS)"
      ;;
    exchange)
      workdir=$WORK/exchange
      run "$name" "$limit" "N = 8 all-gather alone, us/step per call pattern beside the model's exchange term" \
        "$PYTHON" -m seqclf.benchmarks.mosaic_exchange "${EXCHANGE_SIZES[@]}" --workdir="$workdir"
      merge mosaic_exchange "mosaic exchange (benchmarks.mosaic_exchange)" "$workdir/mosaic_exchange.json"
      ;;
    tests)
      options=(-q -rfEs -p no:cacheprovider)
      [[ -n $HAS_PYTEST_TIMEOUT ]] && options+=(--timeout="$TEST_TIMEOUT_S")  # the plugin loads itself
      # Lowering is proven on CPU by the suite; here the kernels run.
      run "$name" "$limit" "${args[*]:1}${HAS_PYTEST_TIMEOUT:+, $TEST_TIMEOUT_S s a test}" \
        "$PYTHON" -m pytest "${options[@]}" -k "not lowers" "${args[@]:1}"
      ;;
    mosaic)
      workdir=$WORK/mosaic/${args[1]}-${args[2]}${args[3]:+-${args[3]}}
      # N = 8 on a GPU: ptxas's report (registers, spills) and the SASS kept in OUTPUT_DIR/mosaic_dump (Mosaic
      # GPU writes them into MOSAIC_GPU_DUMP_TO, which must exist, or prints them: the step's output is
      # kept there too).
      dump=() dump_dir=
      if [[ $PLATFORM == gpu && ${args[1]} == 8 ]]; then
        dump_dir=$OUTPUT_DIR/mosaic_dump/N8-${args[2]}${args[3]:+-${args[3]}}
        mkdir -p "$dump_dir"
        dump=(MOSAIC_GPU_DUMP_TO="$dump_dir" MOSAIC_GPU_DUMP_PTXAS=1 MOSAIC_GPU_DUMP_SASS=1)
      fi
      run "$name" "$limit" "fwd, final-state and fwd+bwd us/step, error vs fused" env "${dump[@]}" \
        "$PYTHON" -m seqclf.benchmarks.mosaic_sweep --cluster_sizes="${args[1]}" --precisions="${args[2]}" \
        --layouts="${args[3]:-units}" "${MOSAIC_SIZES[@]}" --workdir="$workdir" --reference_dir="$WORK/reference"
      if [[ -n $dump_dir ]]; then
        cp "$STEP_LOG" "$dump_dir/step_output.txt"
        ROWS[-1]="${ROWS[-1]}; $(timeout 30 "$PYTHON" -m seqclf.benchmarks.mosaic_report dump "$dump_dir" | clean 200)"
        write_summary
      fi
      MOSAIC_PARTS+=("$workdir/mosaic_sweep.json")
      merge mosaic_sweep "mosaic configurations (benchmarks.mosaic_sweep)" "${MOSAIC_PARTS[@]}"
      ;;
    sweep)
      workdir=$WORK/sweep/${args[1]}-${args[2]}
      run "$name" "$limit" "engines ${SWEEP_ENGINES:-native}; peers ${PEERS:-none}" \
        "$PYTHON" -m seqclf.benchmarks.lstm_engines ${SWEEP_ENGINES:+--engines=$SWEEP_ENGINES} --peers="$PEERS" \
        --batch_sizes="${args[1]}" --hidden_sizes="${args[2]}" "${SWEEP_SIZES[@]}" --workdir="$workdir"
      SWEEP_PARTS+=("$workdir/lstm_engines.json")
      merge lstm_engines "engine sweep (benchmarks.lstm_engines)" "${SWEEP_PARTS[@]}"
      ;;
    article)
      [[ -z $IMDB ]] && continue
      workdir=$WORK/article/${args[1]//,/+}-${args[2]}  # no comma: merge takes a comma-separated list
      feed=()
      [[ ${args[2]} == resident ]] && feed=(--config.device_resident=True --config.steps_per_dispatch=0)
      peers=()
      [[ ${args[1]} == cudnn || $PLATFORM != gpu ]] && [[ -n $PEERS ]] && peers=(--peers="$PEERS")
      run "$name" "$limit" "lstm,cnn_lstm, 1 epoch${peers:+, beside ${PEERS}}" "$PYTHON" -m seqclf.benchmarks.article \
        "${ARTICLE_SIZES[@]}" --imdb="$IMDB" --variants=lstm,cnn_lstm --seeds=0 --engine="${args[1]}" \
        "${peers[@]}" "${feed[@]}" --tensorboard=false --cache_dir="$WORK/cache" --workdir="$workdir"
      ARTICLE_PARTS+=("$workdir/results.json")
      add_section "article: $name" "$workdir/results.md"
      merge article "" "${ARTICLE_PARTS[@]}"
      ;;
  esac
done
RUNNING=
write_summary true
rm -rf "$WORK"
cat "$OUTPUT_DIR/summary.md"
! grep -qE '^\| [^|]+ \| (FAIL|TIMEOUT|CRASH)' "$OUTPUT_DIR/summary.md"
