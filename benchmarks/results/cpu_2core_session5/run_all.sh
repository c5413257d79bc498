#!/bin/bash
# Session 5's measurements for issue 15, one after another on the quiet 2-core CPU (nothing else running).
# Run from the repository root: bash benchmarks/results/cpu_2core_session5/run_all.sh
# (The accuracy runs, bfloat16_seeds3to9, fixed_seeds5to9 and bfloat16_dw_10seeds, ran before this script
# with the article() commands shown at the end; their epoch times are not measurements: other work shared
# the cores then.)
set -u
out=benchmarks/results/cpu_2core_session5
imdb=../shared/data/aclImdb_labeled.tar.gz
py=.venv/bin/python
article() { name=$1; shift; $py -m benchmarks.article --imdb=$imdb --variants=lstm --tensorboard=false --workdir=$out/$name "$@" > $out/$name.log 2>&1; echo "$name rc=$?"; }
$py benchmarks/results/cpu_2core_issue15/kernel_precisions.py 64,500,32,100 5 > $out/kernel_precisions.log 2>&1
echo "kernel_precisions rc=$?"
article side_by_side --epochs=1 --seeds=0 --engine=cpu_kernel,flax --peers=torch
article bfloat16_epochs --epochs=2 --seeds=0 --engine=cpu_kernel --config.model.matmul_precision=bfloat16
$py benchmarks/results/cpu_2core_issue15/fixed_vs_bucketed.py 25000 1 cpu_kernel 2 > $out/fixed_vs_bucketed.log 2>&1
echo "fixed_vs_bucketed rc=$?"
$py -m benchmarks.lstm_engines --engines=cpu_kernel,flax --peers=torch --batch_sizes=16,64,256 --steps=100,500 \
  --hidden_sizes=100,256 --repeats=7 --workdir=$out/sweep > $out/sweep.log 2>&1; echo "sweep rc=$?"
exit 0
# The accuracy runs (3 epochs each):
article bfloat16_seeds3to9 --epochs=3 --seeds=3,4,5,6,7,8,9 --engine=cpu_kernel --config.model.matmul_precision=bfloat16
article fixed_seeds5to9 --epochs=3 --seeds=5,6,7,8,9 --engine=cpu_kernel
article bfloat16_dw_10seeds --epochs=3 --seeds=0,1,2,3,4,5,6,7,8,9 --engine=cpu_kernel --config.model.matmul_precision=bfloat16
