#!/bin/bash
# Session 4's measurements for issue 15, one after another on the quiet 2-core CPU (nothing else running).
# Run from the repository root: bash benchmarks/results/cpu_2core_session4/run_all.sh
set -u
out=benchmarks/results/cpu_2core_session4
imdb=../shared/data/aclImdb_labeled.tar.gz
py=.venv/bin/python
article() { name=$1; shift; $py -m benchmarks.article --imdb=$imdb --variants=lstm --tensorboard=false --workdir=$out/$name "$@" > $out/$name.log 2>&1; echo "$name rc=$?"; }
article side_by_side --epochs=1 --seeds=0 --engine=cpu_kernel,flax --peers=torch
article bfloat16_epoch --epochs=1 --seeds=0 --engine=cpu_kernel --config.model.matmul_precision=bfloat16
article fixed_3seeds --epochs=3 --seeds=0,1,2 --engine=cpu_kernel
article bucketed_3seeds --epochs=3 --seeds=0,1,2 --engine=cpu_kernel --bucketing
$py benchmarks/results/cpu_2core_issue15/fixed_vs_bucketed.py 25000 1 cpu_kernel 2 > $out/fixed_vs_bucketed.log 2>&1
echo "fixed_vs_bucketed rc=$?"
$py -m benchmarks.lstm_engines --engines=cpu_kernel,flax --peers=torch --batch_sizes=16,64,256 --steps=100,500 \
  --hidden_sizes=100,256 --repeats=7 --workdir=$out/sweep > $out/sweep.log 2>&1; echo "sweep rc=$?"
# Accuracy: bf16 with the final kernel, and two more seeds of fixed and bucketed.
article bfloat16_3seeds --epochs=3 --seeds=0,1,2 --engine=cpu_kernel --config.model.matmul_precision=bfloat16
article fixed_seeds34 --epochs=3 --seeds=3,4 --engine=cpu_kernel
article bucketed_seeds34 --epochs=3 --seeds=3,4 --engine=cpu_kernel --bucketing
