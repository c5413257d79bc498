#!/usr/bin/env bash
# The one prepared GPU check (for a session lent a GPU through the device tool): engine equality tests
# without interpret mode, the engine sweep with peers, and the article LSTM / CNN-LSTM epoch per engine.
# Usage on the device machine, from the repo root:  OUT=<dir> bash benchmarks/gpu_check.sh
# Needs the real archive at $SEQCLF_IMDB (copy it into the repo tree under an ignored folder and carry it).
# The device image has jax, flax, optax, absl-py and torch; bring ml-collections, pytest and hypothesis as
# wheels (see the device tool's README: .whl + carry) if its package list lacks them.
set -uo pipefail
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
python3 -c "import jax; print(jax.__version__, jax.devices())" 2>&1 | tee "$OUT/devices.txt"
timeout 150 python3 -m pytest -q -rs tests/test_lstm_api.py tests/test_pallas_gpu.py tests/test_cudnn.py \
  2>&1 | tail -30 | tee "$OUT/tests.txt"
timeout 150 python3 -m benchmarks.lstm_engines --batch_sizes=16,64,256 --steps=500 --hidden_sizes=100,256 \
  --peers=flax,torch --repeats=5 --workdir="$OUT" 2>&1 | tail -60 > "$OUT/lstm_engines.txt"
for engine in scan fused pallas cudnn; do
  timeout 60 python3 -m benchmarks.article --imdb="$SEQCLF_IMDB" --variants=lstm,cnn_lstm --epochs=2 \
    --engine=$engine --workdir="$OUT/article_$engine" --tensorboard=false 2>&1 | tail -6 \
    > "$OUT/article_$engine.txt"
done
tail -n +1 "$OUT"/*.txt
