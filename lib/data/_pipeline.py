"""The Grain input pipeline over a feature store: shuffled, sharded per process, resumable.

`store_dataset` is a `grain.IterDataset` of training batches read from a
`FeatureStore`: the process's contiguous share of the training events (so
each host of a multi-host run reads only its own shards), shuffled from the
seed, a fresh permutation each epoch, cut into batches (a batch may span two
epochs, as in the in-memory rule), each batch read by one `FeatureRows` call
(`pread` of its rows) in the main process or in `workers` prefetching worker
processes. Random access all the way (Grain's `MapDataset`), so the stream is a
pure function of the seed and the position, and `StoreBatches` gives the
iterator state after every batch, which luce.train saves in its orbax
checkpoint to resume a killed run bit for bit.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from absl import flags

from luce._lazy import LazyModule
from luce.data._store import FeatureStore
from luce.errors import ConfigError, DataError

# Grain takes 1-3 s to import: loaded when the store pipeline is first used.
grain = LazyModule("grain")


def process_rows(rows: range, process_index: int, process_count: int) -> range:
  """The contiguous share of `rows` that process `process_index` of `process_count`
  reads: the first `len(rows) % process_count` processes get one event more, so the
  shares are disjoint and together are every row."""
  if not 0 <= process_index < process_count:
    raise ConfigError(f"process_index={process_index} must be in [0, process_count="
                      f"{process_count}).")
  size, extra = divmod(len(rows), process_count)
  start = rows.start + process_index * size + min(process_index, extra)
  return range(start, start + size + (process_index < extra))


@dataclasses.dataclass
class FeatureRows:
  """Event rows of a store as the arrays a model step reads (`luce.data.model_arrays` keys).

  Item features come back as float32 with the catalog's static features
  appended and the `cov_*` columns standardised, exactly as luce.train's
  in-memory path lays them out.

  Attributes:
    store: the FeatureStore.
    covariate_stats: column index -> (mean, std) of the `cov_*` item-feature
      columns (luce.train's training-window statistics); empty: none.
  """
  store: FeatureStore
  covariate_stats: dict = dataclasses.field(default_factory=dict)

  def __call__(self, rows) -> dict:
    rows = np.asarray(rows, dtype=np.int64)
    available = self.store.rows("available", rows)
    item = self.store.rows("item", rows)
    static = self.store.static
    if static.shape[1]:
      item = np.concatenate([item, np.broadcast_to(static[None], (len(rows),) + static.shape)], axis=2)
    for j, (mean, std) in self.covariate_stats.items():
      item[:, :, j] = np.where(available, (item[:, :, j] - mean) / std, 0.0)
    return {"items": self.store.rows("items", rows), "available": available,
            "weights": self.store.rows("weights", rows), "item_features": item,
            "event_features": self.store.rows("event", rows), "index": rows}


def store_dataset(rows_of: FeatureRows, rows: range, batch_size: int, *, seed: int,
                  process_index: int = 0, process_count: int = 1, workers: int = 0,
                  buffer: int = 2) -> grain.IterDataset:
  """Endless batches of this process's share of the events `rows`.

  Args:
    rows_of: what reads a batch of event rows (`FeatureRows`).
    rows: the training events (rows of the store).
    batch_size: events per batch of this process (the global batch divided by
      the process count).
    seed: the shuffle seed; each epoch is a fresh permutation of the share.
    process_index, process_count: this process and how many read (default one;
      luce.train passes `jax.process_index()` and `jax.process_count()`).
    workers: worker processes that read batches ahead (0: read in this process).
    buffer: batches each worker (or this process's reader thread) keeps ready.

  Returns:
    A `grain.IterDataset` of dicts (`FeatureRows` keys plus `index`, the event rows).
  """
  if batch_size < 1:
    raise ConfigError(f"batch_size={batch_size} must be >= 1.")
  if workers < 0:
    raise ConfigError(f"data.workers={workers} must be >= 0 (0: read in the training process).")
  share = process_rows(rows, process_index, process_count)
  if not len(share):
    raise DataError(f"process {process_index} of {process_count} has no training events "
                    f"({len(rows)} in all).")
  dataset = (grain.MapDataset.range(share.start, share.stop).shuffle(seed=int(seed)).repeat()
             .batch(batch_size).map(rows_of))
  if workers:
    if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags; outside an absl app: defaults
      flags.FLAGS.mark_as_parsed()
    return dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)).mp_prefetch(
        grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=buffer))
  return dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=buffer))


class StoreBatches:
  """An iterator over a `store_dataset` that reports its state after each batch.

  `next()` returns (batch, state): `state` (bytes, JSON) is where the stream
  stands after that batch, and `restore(state)` continues from there, so the
  batch after it is the one an uninterrupted stream gives next.
  """

  def __init__(self, dataset: grain.IterDataset):
    self._iterator = iter(dataset)

  def next(self) -> tuple[dict, bytes]:
    batch = next(self._iterator)
    return batch, json.dumps(self._iterator.get_state()).encode()

  def restore(self, state: bytes) -> None:
    self._iterator.set_state(json.loads(state))

  def close(self) -> None:
    close = getattr(self._iterator, "close", None)
    if close is not None:
      close()
