"""Loading results files for the comparison: finding them, checking them, labelling each by its device."""

import dataclasses
import os
import re

from seqclf import results
from seqclf.errors import UsageError

RESULT_FILE_NAMES = ("results.json", "lstm_engines.json")
KINDS = ("article", "lstm_engines")
# Config keys that change how long an epoch takes or what is learned: runs that differ are not comparable.
CONFIG_KEYS = ("maxlen", "batch_size", "top_words")
# Also listed under the table: how long and how each source trained.
DESCRIBED_CONFIG_KEYS = (*CONFIG_KEYS, "epochs", "mask", "num_buckets", "device_resident")


@dataclasses.dataclass
class Source:
  """One results file and its device label (unique among the files of its kind)."""

  path: str
  results: dict
  label: str = ""

  @property
  def kind(self) -> str:
    return self.results["kind"]

  @property
  def meta(self) -> dict:
    return self.results.get("meta") or {}

  @property
  def runs(self) -> list[dict]:
    return self.results.get("runs") or []


def find_result_files(paths: list[str]) -> list[str]:
  """The results files named by ``paths``: files as given, directories searched one level deep."""
  found = []
  for path in paths:
    if os.path.isfile(path):
      found.append(path)
      continue
    if not os.path.isdir(path):
      raise UsageError(f"{path} does not exist; pass results.json files or benchmark workdirs")
    directories = [path] + sorted(
      os.path.join(path, name) for name in os.listdir(path) if os.path.isdir(os.path.join(path, name))
    )
    in_path = [
      os.path.join(directory, name)
      for directory in directories
      for name in RESULT_FILE_NAMES
      if os.path.isfile(os.path.join(directory, name))
    ]
    if not in_path:
      raise UsageError(
        f"no {' or '.join(RESULT_FILE_NAMES)} in {path} or its subdirectories; pass a "
        "results file or a benchmark workdir"
      )
    found += in_path
  return list(dict.fromkeys(os.path.normpath(path) for path in found))


def load_sources(paths: list[str]) -> list[Source]:
  """Loads every results file (schema-checked) and gives each a unique device label within its kind."""
  sources = []
  for path in find_result_files(paths):
    loaded = results.load(path)
    if loaded.get("kind") not in KINDS:
      raise UsageError(
        f"{path} holds {loaded.get('kind')!r} results; compare reads {' and '.join(KINDS)} results"
      )
    if isinstance(loaded.get("runs"), list):  # a sweep's error rows (a refused shape) have no timing
      loaded["runs"] = [run for run in loaded["runs"] if not (isinstance(run, dict) and "error" in run)]
    check_runs(path, loaded)
    sources.append(Source(path, loaded))
  for kind in KINDS:
    label_sources([source for source in sources if source.kind == kind])
  return sources


def _short_cpu_name(model: str) -> str:
  for noise in (r"\((R|TM|tm)\)", r"\bCPU\b", r"\bProcessor\b", r"\b\d+-Core\b", r"@ *[\d.]+ *GHz"):
    model = re.sub(noise, "", model)
  return " ".join(model.split())


def device_label(meta: dict) -> str:
  """e.g. "cpu x4 (AMD EPYC)", "gpu x1 (NVIDIA H200)", "tpu x8 (TPU v5 lite, 2 processes)"."""
  device = meta.get("device") or {}
  platform = device.get("platform", "unknown")
  model = _short_cpu_name(meta.get("cpu") or "") if platform == "cpu" else device.get("kind", "")
  details = [model] if model else []
  if device.get("process_count", 1) > 1:
    details.append(f"{device['process_count']} processes")
  label = f"{platform} x{device.get('count', '?')}"
  return f"{label} ({', '.join(details)})" if details else label


def label_sources(sources: list[Source]) -> None:
  """Sets each source's label to its device label; equal ones get their host added, or else a counter."""
  by_label = {}
  for source in sources:
    source.label = device_label(source.meta)
    by_label.setdefault(source.label, []).append(source)
  for same in by_label.values():
    if len(same) == 1:
      continue
    hosts = [source.meta.get("host") for source in same]
    for index, source in enumerate(same, 1):
      source.label += f" @{hosts[index - 1]}" if len(set(hosts)) == len(hosts) else f" #{index}"


def config_differences(sources: list[Source]) -> list[str]:
  """Each `CONFIG_KEYS` difference between article sources, as "KEY: VALUE in PATH, ..."."""
  differences = []
  for key in CONFIG_KEYS:
    values = {source.path: (source.meta.get("config") or {}).get(key) for source in sources}
    if len(set(map(repr, values.values()))) > 1:
      differences.append(f"{key}: " + ", ".join(f"{value!r} in {path}" for path, value in values.items()))
  return differences


def check_configs(sources: list[Source], allow_mismatch: bool) -> None:
  """Refuses article sources trained on different data setups, unless ``allow_mismatch``."""
  differences = config_differences(sources)
  if differences and not allow_mismatch:
    raise UsageError(
      f"the results differ in {differences[0]}; compare runs with the same config or pass "
      "--allow_config_mismatch"
    )


# What compare reads of each run, per kind (the rest of a run is the driver's business).
RUN_KEYS = {
  "article": ("variant", "engine", "epochs"),
  "lstm_engines": ("engine", "mode", "batch", "steps", "hidden", "median_s"),
}
EPOCH_KEYS = ("epoch", "epoch_s", "examples_per_s", "test_acc")


def check_runs(path: str, loaded: dict) -> None:
  """Refuses a results file whose runs lack what the table and plots read, naming the first gap."""
  runs = loaded.get("runs")
  if not isinstance(runs, list):
    raise UsageError(f"{path} has no list of runs; re-run the benchmark that wrote it")
  for index, run in enumerate(runs):
    epochs = run.get("epochs", []) if isinstance(run, dict) else []
    entries = [(run, RUN_KEYS[loaded["kind"]])] + [
      (epoch, EPOCH_KEYS) for epoch in epochs if loaded["kind"] == "article"
    ]
    for entry, keys in entries:
      missing = [key for key in keys if not isinstance(entry, dict) or key not in entry]
      if missing:
        raise UsageError(
          f"{path}: run {index} has no {', '.join(missing)}; the file is not a complete "
          f"{loaded['kind']} results file: re-run the benchmark that wrote it, or leave the file out"
        )
