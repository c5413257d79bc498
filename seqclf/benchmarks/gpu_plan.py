r"""The GPU check's plan (`benchmarks/gpu_check.sh`): its steps in order of value, each with its time limit.

  python -m seqclf.benchmarks.gpu_plan budget              # the budget on a GPU, s
  python -m seqclf.benchmarks.gpu_plan first               # the steps before the plan: NAME|LIMIT
  python -m seqclf.benchmarks.gpu_plan gpu MOSAIC IMDB     # the plan on a GPU (MOSAIC, IMDB: 1 or 0)
  python -m seqclf.benchmarks.gpu_plan cpu MOSAIC IMDB     # its rehearsal on a CPU

Each plan line is ``NAME|LIMIT|SPEC|PLANNED``: the step as the check prints it, its limit in seconds on
a GPU (the script scales it on a CPU), what it runs, and whether it is *planned*: the steps, in order,
whose limits with those of `FIRST` add up within `BUDGET_S`, so each runs to its full limit whatever
the steps before it take; the rest run while the budget lasts. Standard library only: the script asks
before anything else is installed.
"""

import sys
from typing import NamedTuple

# The check's wall-time budget on a GPU, s.
BUDGET_S = 420
# The steps before the plan, each with its limit: the offline bundle's install, then the preflight.
FIRST = {
  "install": 40,
  "preflight nvidia-smi": 10,
  "preflight versions": 20,
  "preflight devices": 30,
  "preflight cuda": 15,
  "preflight imports": 30,
}


class Step(NamedTuple):
  name: str
  limit: int  # s, on a GPU
  spec: str  # what the script runs: KIND ARGS...
  planned: bool = False


# The mosaic configurations ("N precision", a third word naming the layout where it is not "units") by
# value: the engine's default first (the layout `mosaic_cost.best` ranks first, the batch-split forward at
# N = 8), then the same with the "units" forward, then the rest.
GPU_MOSAIC = (
  "8 float32 batch",
  "8 float32",
  "8 bfloat16 batch",
  "8 bfloat16",
  "4 float32",
  "4 bfloat16",
  "2 bfloat16",
  "1 bfloat16",
)
CPU_MOSAIC = ("2 bfloat16", "1 bfloat16")
# The engine sweep's shapes, "B H".
GPU_SHAPES = ("64 100", "256 100", "64 256")
CPU_SHAPES = ("2 4", "4 4")


def _mosaic(config: str, limit: int) -> Step:
  return Step(f"mosaic N={config}", limit, f"mosaic {config}")


def _article(engines: str, feed: str, limit: int) -> Step:
  names = engines.replace(",", " ")
  name = f"article {names} resident" if feed == "resident" else f"article host-fed {names}"
  return Step(name, limit, f"article {engines} {feed}")


def steps(platform: str, mosaic: bool, imdb: bool) -> list[Step]:
  """The plan, most valuable first: the Mosaic GPU smoke kernel, the cluster ping-pong and the exchange
  microbenchmark (the first minute says whether clusters work and what an exchange costs), the engine's
  default configuration, the article epoch with it and right after it with cuDNN beside PyTorch (the
  anchor), then the rest; `planned` marked."""
  gpu = platform == "gpu"
  plan = []
  if mosaic:
    plan += [
      Step("smoke", 20, "smoke"),
      Step("pingpong", 20, "pingpong"),
      Step("exchange", 30, "exchange"),
    ]
  configs = (GPU_MOSAIC if gpu else CPU_MOSAIC) if mosaic else ()
  plan += [_mosaic(config, 45) for config in configs[:1]]
  if imdb:
    engines = (["mosaic"] if mosaic and gpu else []) + (["cudnn"] if gpu else ["fused"])
    plan += [_article(engine, "resident", 80) for engine in engines]
  plan += [_mosaic(config, 40) for config in configs[1:2]]
  if gpu:
    if mosaic:
      plan.append(Step("tests mosaic", 120, "tests tests/test_mosaic_gpu.py tests/test_mosaic_split.py"))
    plan.append(Step("tests pallas", 60, "tests tests/test_pallas_gpu.py"))
  plan += [_mosaic(config, 40) for config in configs[2:]]
  for shape in GPU_SHAPES if gpu else CPU_SHAPES:
    batch, hidden = shape.split()
    plan.append(Step(f"sweep B={batch} H={hidden}", 60, f"sweep {shape}"))
  if gpu and imdb:
    plan += [_article(engine, "resident", 80) for engine in ("pallas", "fused")]
    plan.append(_article("mosaic,cudnn" if mosaic else "cudnn", "host", 120))
  if gpu:
    plan.append(
      Step("tests api", 120, "tests tests/test_engines.py tests/test_lstm_api.py tests/test_cudnn.py")
    )
  spent, marked = sum(FIRST.values()), []
  for step in plan:
    spent += step.limit
    marked.append(step._replace(planned=spent <= BUDGET_S and all(s.planned for s in marked)))
  return marked


def main(argv: list[str]) -> None:
  if argv[1:] == ["budget"]:
    print(BUDGET_S)
    return
  if argv[1:] == ["first"]:
    for name, limit in FIRST.items():
      print(f"{name}|{limit}")
    return
  if len(argv) != 4 or argv[1] not in ("gpu", "cpu") or {argv[2], argv[3]} - {"0", "1"}:
    raise SystemExit("error: pass budget, first, or gpu|cpu MOSAIC IMDB (each 1 or 0)")
  for step in steps(argv[1], argv[2] == "1", argv[3] == "1"):
    print(f"{step.name}|{step.limit}|{step.spec}|{'planned' if step.planned else 'extra'}")


if __name__ == "__main__":
  main(sys.argv)
