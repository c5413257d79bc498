"""`seqclf.benchmarks.gpu_plan`: the GPU check's steps by value, and the planned ones fit its budget."""

import subprocess
import sys

import pytest

from seqclf.benchmarks import gpu_plan
from seqclf.rnn.engines import mosaic_cost, mosaic_gpu

# What the first minutes of a GPU check must answer, in this order.
KEY_STEPS = [
  "smoke",
  "pingpong",
  "exchange",
  "mosaic N=8 float32 batch",
  "article mosaic resident",
  "article cudnn resident",
]


def test_the_planned_limits_add_up_within_the_budget():
  """On a Hopper GPU with the IMDB archive, the key steps are planned, in order and first, and their
  limits with the preflight's add up within the budget, so each gets its whole limit whatever came before;
  the cuDNN (and PyTorch) epoch, the anchor, comes right after the mosaic one."""
  plan = gpu_plan.steps("gpu", mosaic=True, imdb=True)
  planned = [step for step in plan if step.planned]
  assert [step.name for step in planned] == KEY_STEPS
  assert plan[: len(planned)] == planned  # planned steps come first
  assert sum(gpu_plan.FIRST.values()) + sum(step.limit for step in planned) <= gpu_plan.BUDGET_S
  # The next step would not have fitted: the planned prefix is as long as the budget allows.
  assert (
    sum(gpu_plan.FIRST.values()) + sum(step.limit for step in plan[: len(planned) + 1]) > gpu_plan.BUDGET_S
  )


def test_the_first_mosaic_configuration_is_the_engines_default():
  """The configuration timed first is the one the engine runs: float32 at the default cluster size, in the
  layout `mosaic_cost` ranks first; the other layout's comes next."""
  layout, size = mosaic_cost.best("float32")
  assert size == mosaic_gpu.DEFAULT_CLUSTER_SIZE
  assert gpu_plan.GPU_MOSAIC[0] == f"{size} float32" + ("" if layout == "units" else f" {layout}")
  assert gpu_plan.GPU_MOSAIC[1].split()[:2] == [str(size), "float32"]
  plan = gpu_plan.steps("gpu", mosaic=True, imdb=True)
  assert [step.spec for step in plan if step.spec.startswith("mosaic")][:2] == [
    f"mosaic {config}" for config in gpu_plan.GPU_MOSAIC[:2]
  ]


@pytest.mark.parametrize(
  "platform, mosaic, imdb", [("gpu", False, True), ("gpu", True, False), ("cpu", True, True)]
)
def test_every_plan_keeps_its_planned_steps_within_the_budget(platform, mosaic, imdb):
  """Whatever the machine lacks, the planned steps still fit, and no mosaic step is planned without Mosaic."""
  plan = gpu_plan.steps(platform, mosaic, imdb)
  planned = [step for step in plan if step.planned]
  assert sum(gpu_plan.FIRST.values()) + sum(step.limit for step in planned) <= gpu_plan.BUDGET_S
  assert mosaic or not [
    step for step in plan if step.spec.split()[0] in ("smoke", "pingpong", "exchange", "mosaic")
  ]
  assert imdb or not [step for step in plan if step.spec.startswith("article")]
  assert len({step.name for step in plan}) == len(plan)


def test_the_script_reads_the_plan_from_the_command_line():
  """What `benchmarks/gpu_check.sh` reads: the budget, NAME|LIMIT for the first steps, NAME|LIMIT|SPEC|planned or
  extra for the plan; a wrong call is one error line."""

  def ask(*args):
    return subprocess.run(
      [sys.executable, "-m", "seqclf.benchmarks.gpu_plan", *args], capture_output=True, text=True
    )

  assert ask("budget").stdout == f"{gpu_plan.BUDGET_S}\n"
  first = ask("first")
  assert first.returncode == 0
  assert [line.split("|") for line in first.stdout.splitlines()] == [
    [name, str(limit)] for name, limit in gpu_plan.FIRST.items()
  ]
  lines = [line.split("|") for line in ask("gpu", "1", "1").stdout.splitlines()]
  assert [(name, int(limit), spec, kind == "planned") for name, limit, spec, kind in lines] == [
    tuple(step) for step in gpu_plan.steps("gpu", True, True)
  ]
  wrong = ask("tpu", "1", "1")
  assert wrong.returncode != 0 and wrong.stderr.strip().startswith("error:")
