"""Data parallelism: one `Mesh` with a ``batch`` axis over every device of every process.

Global-batch semantics: ``config.batch_size`` is the number of examples per optimizer step summed over
all devices; each of the N devices computes 1/N of it and the gradients are averaged by XLA (the loss is
a mean over the global batch), so 1 device and N devices follow the same trajectory up to float
summation order. The batch size must therefore divide by the device count.

Multi-host: every process runs the same program with the same seed and so builds the same global batch
on its host; `shard` hands each process's devices their slices. Start each process with
`initialize_distributed` (``jax.distributed.initialize``) before anything else touches JAX.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from seqclf.errors import ConfigError

BATCH_AXIS = "batch"


def initialize_distributed(coordinator_address: str, num_processes: int, process_id: int) -> None:
  """Joins a multi-process JAX job (a no-op for a single process).

  Raises:
    ConfigError: A process count under 1, a process index outside it (a single process too: its flags
      would say it is one of a job it is not), or several processes without a coordinator.
  """
  if num_processes < 1:
    raise ConfigError(f"--num_processes must be at least 1 (1: this process alone), got {num_processes}")
  if not 0 <= process_id < num_processes:
    raise ConfigError(
      f"--process_id must be in [0, {num_processes}) for --num_processes={num_processes}, got "
      f"{process_id}; give each process its own index from 0"
    )
  if num_processes == 1:
    return
  if not coordinator_address:
    raise ConfigError("--coordinator_address (host:port of process 0) is needed with --num_processes > 1")
  jax.distributed.initialize(
    coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
  )


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over ``devices`` (default: every device of every process)."""
  return Mesh(np.array(devices if devices is not None else jax.devices()), (BATCH_AXIS,))


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
  devices = mesh.devices.size
  if batch_size % devices:
    raise ConfigError(
      f"--config.{name}={batch_size} does not divide over {devices} devices; use a multiple of {devices}"
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(BATCH_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def shard(tree, sharding: NamedSharding):
  """Places arrays that every process holds in full (host or local device arrays) with ``sharding``.

  Works the same on one process and on many: each process fills only its own devices' slices.
  """

  def place(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(place, tree)
