"""The feature store built on a Ray cluster: the files of `build_store`, the chunks built by Ray tasks.

For tables whose features take longer to build than one machine allows,
`build_store_distributed` runs each chunk of `build_store` as one Ray task
on a cluster (or on a Ray started in this process), and writes the same
files, byte for byte, as the single-process build.

How the work is split so that the result cannot depend on the cluster:

- The driver plans the chunks once (`_plan_chunks`, the plan `feature_chunks`
  uses): each item's last pick before each chunk, the levels of the categorical
  covariates, the catalog features.
- The group history of categorical covariates is a running float64 sum whose
  bits depend on the order of its additions, so the driver runs it through the
  table once, in order, stretch by stretch (`_covariate_features`, memory bounded
  by a chunk), keeping the sums each chunk starts from: the sums `feature_chunks`
  carries from one chunk to the next. Every other window is re-read by the chunk.
- Each chunk is one task: it builds its features (`_build_chunk`, the code of
  `feature_chunks`), encodes and writes its shard into the store's folder, and
  returns the shard's entry of `store.json`. The driver orders the entries by
  chunk, whatever order the tasks finish in, and writes `static.npy` and
  `store.json` last, as `build_store` does.

Ray is an optional dependency (`pip install 'luce[distributed]'`), imported
when a build starts.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pathlib
import socket
import time
from collections.abc import Callable

from luce.data._features import FeatureConfig, _covariate_features
from luce.data._store import (FeatureStore, _build_chunk, _ChunkPlan, _finish_store, _most_available,
                              _open_store, _plan_chunks, _shard_arrays, _write_shard)
from luce.data._table import EventTable
from luce.errors import ConfigError, LuceError

# Where the feature store is built: one process (`build_store`) or a Ray cluster.
STORE_ENGINES = ("local", "ray")


def _import_ray():
  try:
    return importlib.import_module("ray")
  except ImportError as err:
    raise ConfigError(f"the Ray store engine needs Ray ({err}); install it with "
                      f"`pip install 'luce[distributed]'` (or ray[client,data]==2.60.0).") from None


def _check_address(address: str) -> None:
  """A ConfigError naming `address` unless something listens there (Ray itself would
  wait about a minute for a GCS that is not there)."""
  if not isinstance(address, str) or not address:
    raise ConfigError(f"address={address!r} must be a Ray address ('auto', 'HOST:PORT' or "
                      f"'ray://HOST:PORT') or None for a Ray started in this process.")
  if address in ("auto", "local"):
    return
  host, _, port = address.removeprefix("ray://").rpartition(":")
  if not host or not port.isdigit():
    raise ConfigError(f"address={address!r}: not 'auto', 'HOST:PORT' or 'ray://HOST:PORT'.")
  try:
    socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
  except OSError as err:
    raise ConfigError(f"address={address!r}: no Ray cluster answers at {host}:{port} ({err}); start "
                      f"one (`ray start --head`) or pass address=None for a Ray in this process.") from None


def _check_cluster(address: str | None, num_cpus: int | None) -> None:
  if address is not None:
    _check_address(address)
  if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
    raise ConfigError(f"num_cpus={num_cpus!r} must be an int >= 1 (or None: every core).")


def _connect(ray, address: str | None, num_cpus: int | None, say: Callable[[str], None]) -> bool:
  """Connects to Ray; returns whether this call started it (and so must shut it down)."""
  if ray.is_initialized():
    if address is not None or num_cpus is not None:
      say(f"feature store: using the Ray runtime this process already started (address={address!r}, "
          f"num_cpus={num_cpus!r} unused)")
    return False
  try:
    if address is None:
      ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False)
    else:
      ray.init(address=address, include_dashboard=False)
  except (ConnectionError, ValueError, RuntimeError) as err:
    raise ConfigError(f"address={address!r}: Ray could not start or connect ({err}).") from None
  return True


def _group_sums(table: EventTable, plan: _ChunkPlan) -> list[dict]:
  """Per chunk, the group history's sums before `plan.lo(start)`: what `feature_chunks`
  carries into it, from one in-order pass over the events."""
  if not plan.groups:
    return [{} for _ in plan.starts]
  # The sums do not depend on the horizons; one horizon builds the fewest columns.
  config = dataclasses.replace(plan.config, group_horizons=(1,))
  out, groups, at = [], plan.groups, 0
  for start in plan.starts:
    lo = plan.lo(start)
    if lo > at:
      _, _, groups = _covariate_features(table.slice(at, lo), config, groups, carry_at=lo - at)
      at = lo
    out.append(groups)
  return out


def _build_shard(table: EventTable, plan: _ChunkPlan, index: int, groups: dict, folder: str,
                 dtype: str, k_max: int) -> tuple[dict, int, tuple]:
  """One Ray task: chunk `index` built and written as shard `index` of `folder`.

  Returns (its store.json entry, its most available items, its feature names).
  """
  (start, stop, feats), _ = _build_chunk(table, plan, plan.starts[index], groups)
  arrays = _shard_arrays(table, start, stop, feats, k_max)
  most = _most_available(feats)
  shard = _write_shard(pathlib.Path(folder), index, start, stop, feats, arrays, dtype)
  return shard, most, (feats.item_names, feats.event_names, feats.static_names)


def _run_tasks(ray, table: EventTable, plan: _ChunkPlan, groups: list[dict], folder: pathlib.Path,
               dtype: str) -> list[tuple]:
  """Every chunk's task; their results in chunk order. On a failure the chunks after it
  are cancelled and those before it awaited, so the error raised is the first chunk's
  (the one `build_store` meets), whatever order the tasks fail in."""
  task = ray.remote(num_cpus=1)(_build_shard)
  table_ref, plan_ref = ray.put(table), ray.put(plan)
  refs = [task.remote(table_ref, plan_ref, index, groups[index], str(folder), dtype, table.k_max)
          for index in range(len(plan.starts))]
  index_of = {ref: index for index, ref in enumerate(refs)}
  results, pending = [None] * len(refs), list(refs)
  while pending:
    done, pending = ray.wait(pending, num_returns=1)
    try:
      results[index_of[done[0]]] = ray.get(done[0])
    except ray.exceptions.RayTaskError as err:
      first, failed = err, index_of[done[0]]
      for ref in pending:
        if index_of[ref] > failed:
          ray.cancel(ref)
      for ref in sorted((r for r in pending if index_of[r] < failed), key=index_of.get):
        try:
          ray.get(ref)
        except ray.exceptions.RayTaskError as earlier:
          first = earlier
          break
      if isinstance(first.cause, LuceError):      # a feature the store refuses: build_store's error
        raise first.cause from None
      raise first from None
  return results


def build_store_distributed(table: EventTable, folder: str | os.PathLike,
                            config: FeatureConfig | None = None, *, dtype: str = "bfloat16",
                            chunk_events: int = 65_536, address: str | None = None,
                            num_cpus: int | None = None,
                            say: Callable[[str], None] = print) -> FeatureStore:
  """`build_store` with the chunks built and written by Ray tasks.

  The store's files (every shard, `static.npy`, `store.json` but its
  `build_seconds`) equal those of `build_store(table, folder, config,
  dtype=dtype, chunk_events=chunk_events)` byte for byte, for any number of
  workers and any order the tasks finish in; a store either build wrote is
  reused by the other.

    >>> import luce.data
    >>> table = luce.data.read("synthetic:ranking?n_items=8&k=3&n_events=200&seed=0")
    >>> store = luce.data.build_store_distributed(table, "features", chunk_events=50,
    ...                                           num_cpus=2)  # doctest: +SKIP
    >>> len(store.meta["shards"])                               # doctest: +SKIP
    4

  Args:
    table: the events (sent once to the cluster's object store).
    folder: the store's folder. The workers write the shards into it, so on a
      cluster of several machines it must be a path every node sees the same
      (a shared file system).
    config: the features (default FeatureConfig()), as in `build_store`.
    dtype: storage dtype of the item features, as in `build_store`.
    chunk_events: events per chunk, task and shard; a task's memory is bounded by it.
    address: the Ray cluster: None starts a local Ray in this process (and stops
      it after), "auto" the cluster of this machine (`ray start --head`),
      "HOST:PORT" its GCS, "ray://HOST:10001" a Ray client server; every node
      needs this luce installed. When this process has already called
      `ray.init`, that runtime is used.
    num_cpus: CPUs of the local Ray (address=None; default every core), one task per CPU.
    say: where the build/reuse and cluster messages go.

  Returns:
    The FeatureStore.

  Raises:
    ConfigError: Ray is not installed, `address` is malformed or nothing answers
      there, `num_cpus` < 1, or a `build_store` argument is invalid.
    DataError: a feature the store refuses (non-finite, beyond float16's range),
      as `build_store` raises it.
  """
  _check_cluster(address, num_cpus)
  folder = pathlib.Path(folder).resolve()
  config, key, store = _open_store(table, folder, config, dtype, chunk_events, say)
  if store is not None:
    return store
  ray = _import_ray()
  t0 = time.perf_counter()
  plan = _plan_chunks(table, config, chunk_events)
  groups = _group_sums(table, plan)
  started = _connect(ray, address, num_cpus, say)
  try:
    results = _run_tasks(ray, table, plan, groups, folder, dtype)
  finally:
    if started:
      ray.shutdown()
  shards = [shard for shard, _, _ in results]
  most_available = max((most for _, most, _ in results), default=0)
  names = results[-1][2] if results else None
  return _finish_store(folder, table, key, chunk_events, shards, most_available, names, plan.static, t0)
