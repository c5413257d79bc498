"""Where one thread's backward loop spends its time: inserts rdtsc timers between the phases of a copy of
seqclf/lstm/cpu_kernel.cc's BackwardRows, builds backward_phases.cc against it and runs it.

  python benchmarks/results/cpu_2core_session5/backward_phases.py 32,500,32,100        # float32
  python benchmarks/results/cpu_2core_session5/backward_phases.py 32,500,32,100 bf16   # bf16 products

The last weight-gradient product, after the loop, counts as "rest" (one of ~125 at this shape).
"""

import pathlib
import subprocess
import sys
import tempfile

import jax

HERE = pathlib.Path(__file__).resolve().parent
KERNEL = HERE.parents[2] / "seqclf" / "lstm" / "cpu_kernel.cc"
# (the line a timer goes before, the phase that ends there)
TIMERS = [
  ("    if (pending + n > capacity) flush();\n", 0),  # prefetches and the masked rows
  ("    float* dz = &dz_steps[", 1),  # the weight-gradient product (flush)
  ("    std::fill(d_inputs.begin()", 2),  # the gate gradients
  (
    "    StepInputs(s, xs, input_dropout, recurrent_dropout, first, active.data(), n, t, [&](int r) {\n      return t > 0",
    3,
  ),  # dz @ [W; U]^T
  ("    pending += n;\n", 4),  # rebuilding the step's inputs
]


def instrumented(source: str) -> str:
  start, end = source.index("void BackwardRows("), source.index("using F32 = ffi::Buffer")
  body = source[start:end].replace(
    "  for (int t = s.steps - 1; t >= 0; --t) {\n",
    "  for (int t = s.steps - 1; t >= 0; --t) {\n    uint64_t last = __rdtsc();\n",
    1,
  )
  for line, phase in TIMERS:
    assert line in body, line
    body = body.replace(
      line, f"    {{ uint64_t now = __rdtsc(); g_ph[{phase}] += now - last; last = now; }}\n" + line, 1
    )
  header = source[:start].replace("#include <vector>\n", "#include <vector>\n#include <x86intrin.h>\n", 1)
  return header + "uint64_t g_ph[8];\n" + body + source[end:]


with tempfile.TemporaryDirectory() as scratch:
  kernel = pathlib.Path(scratch) / "kernel_with_timers.cc"
  kernel.write_text(instrumented(KERNEL.read_text()))
  binary = pathlib.Path(scratch) / "backward_phases"
  flags = ["-O3", "-march=native", "-fno-trapping-math", "-fno-math-errno", "-std=c++17", "-pthread", "-w"]
  subprocess.run(
    [
      "g++",
      *flags,
      f"-I{jax.ffi.include_dir()}",
      f'-DKERNEL="{kernel}"',
      str(HERE / "backward_phases.cc"),
      "-o",
      str(binary),
    ],
    check=True,
  )
  subprocess.run([str(binary), *sys.argv[1:]], check=True)
