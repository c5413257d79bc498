"""Lowering for a platform this process does not have: a GPU or TPU program built on a CPU-only host.

JAX lowers for another platform with ``.lower(lowering_platforms=("cuda",))``, but since jax 0.11 a Pallas
(Triton) kernel also needs to know *which* GPU it is built for, and without one asks for an abstract
device (``jax.sharding.AbstractDevice`` in an abstract mesh). `targeting` supplies one, and
`target_platform` is how seqclf's engines see it: "auto" and the Pallas kernels' interpret mode follow
the platform being lowered for, not the host's.

  with lowering.targeting("gpu"):
    lowered = jax.jit(step).trace(*args).lower(lowering_platforms=("cuda",))
  # or in one call:
  lowered = lowering.lower(jax.jit(step), *args, platform="gpu")

Lowering proves a program is accepted up to StableHLO (and, for Pallas, Triton/Mosaic IR); only a device
shows that it compiles to machine code, runs and gives the right numbers.
"""

import contextlib

import jax
from jax.sharding import AbstractDevice, AbstractMesh

# The device each platform is lowered for when this host has none: the GPU of the project's measuring
# machine, a current TPU, and a CPU (for a GPU host lowering for CPU). Kernels that specialise on the
# device (Triton's compute capability) see it.
DEVICES = {
  "cpu": AbstractDevice(device_kind="cpu", num_cores=None, platform="cpu"),
  "gpu": AbstractDevice(device_kind="NVIDIA H200", num_cores=132, platform="gpu"),
  "tpu": AbstractDevice(device_kind="TPU v5 lite", num_cores=1, platform="tpu"),
}

# JAX platform names (as in an engine's ``platforms``) -> the names ``lowering_platforms`` takes.
LOWERING_PLATFORM = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}

# The abstract mesh's one axis; unused by seqclf's own shardings, so it never collides with theirs.
_AXIS = "lowering_target"


def target_platform() -> str:
  """The platform being traced for: the abstract device's inside `targeting`, else JAX's default."""
  device = jax.sharding.get_abstract_mesh().abstract_device
  return device.platform if device is not None else jax.default_backend()


@contextlib.contextmanager
def targeting(platform: str, device: AbstractDevice | None = None):
  """Traces and lowers inside for ``platform`` ("cpu", "gpu", "tpu") on ``device`` (default `DEVICES`).

  For the host's own platform without a ``device`` nothing changes: the real device is used.
  """
  if platform not in LOWERING_PLATFORM:
    raise ValueError(f"unknown platform {platform!r}; choose one of {', '.join(LOWERING_PLATFORM)}")
  device = device or (None if platform == jax.default_backend() else DEVICES[platform])
  if device is None:
    yield
    return
  with jax.sharding.use_abstract_mesh(AbstractMesh((jax.device_count(),), (_AXIS,), abstract_device=device)):
    yield


def lower(jitted, *args, platform: str, device: AbstractDevice | None = None, **kwargs) -> jax.stages.Lowered:
  """``jitted`` (a `jax.jit` function) traced on ``args`` and lowered for ``platform``, on any host."""
  with targeting(platform, device):
    return jitted.trace(*args, **kwargs).lower(lowering_platforms=(LOWERING_PLATFORM[platform],))
