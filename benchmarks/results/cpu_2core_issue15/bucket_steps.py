import pathlib

# ruff: noqa: E402  (the heap preset must be applied before JAX is imported)
import resource
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))  # the repository
from seqclf import presets

presets.apply("cpu_heap")
import jax
import jax.numpy as jnp

from configs import default
from seqclf import models, train
from seqclf.data.cache import load_encoded
from seqclf.train import TrainState

engine = sys.argv[1] if len(sys.argv) > 1 else "cpu_kernel"
data = load_encoded("/work/shared/data/aclImdb_labeled.tar.gz", top_words=5000, maxlen=500)
config = default.get_config()
cfgb = default.get_config()
cfgb.num_buckets = 6
fb = train._Feeder(data, cfgb, 0)
ff = train._Feeder(data, config, 0)
model = models.create("lstm", vocab_size=5000, **{**config.model, "engine": engine})
params = model.init(
  {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)},
  jnp.zeros((1, 500), jnp.int32),
  train=False,
)["params"]
state = TrainState.create(apply_fn=model.apply, params=params, tx=train.make_optimizer(config))
key = jax.random.PRNGKey(1)
jt = jax.jit(train.make_train_step(model, True), donate_argnums=0)
jf = jax.jit(train.make_train_step(model, False), donate_argnums=0)
spec = lambda L: fb.batch_spec(64, L)
cb = {L: jt.lower(state, spec(L), key).compile() for L in fb.lengths}
cf = jf.lower(state, spec(500), key).compile()
plan = list(fb.train(1))
fixed = list(ff.train(1))
N = int(sys.argv[2]) if len(sys.argv) > 2 else 100


def run(fn_of, batches):
  global state
  ts = []
  t0 = time.perf_counter()
  f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for b in batches:
    t = time.perf_counter()
    state, m = fn_of(b)(state, b, key)
    jax.block_until_ready(m)
    ts.append(time.perf_counter() - t)
  return time.perf_counter() - t0, ts, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0


run(lambda b: cb[b["tokens"].shape[1]], plan[:30])
run(lambda b: cf, fixed[:5])
for _round in range(2):
  tf, tsf, ff_ = run(lambda b: cf, fixed[:N])
  tb, tsb, fb_ = run(lambda b: cb[b["tokens"].shape[1]], plan[:N])
  # grouped by shape: same batches sorted
  srt = sorted(plan[:N], key=lambda b: b["tokens"].shape[1])
  tg, tsg, fg = run(lambda b: cb[b["tokens"].shape[1]], srt)
  ideal = sum(b["tokens"].shape[1] for b in plan[:N]) / (500 * N)
  print(
    f"fixed {tf:.2f}s flt={ff_} | bucketed interleaved {tb:.2f}s ratio {tb / tf:.3f} flt={fb_} | grouped {tg:.2f}s ratio {tg / tf:.3f} flt={fg} | length ratio {ideal:.3f}",
    flush=True,
  )
