"""Benchmark: load + validate + build features for 20-of-80 events, in memory and into the
feature store, and train from the store through the Grain pipeline.

    python benchmarks/data_pipeline.py [--events=1000000] [--k=20] [--n=80]
    python benchmarks/data_pipeline.py --events=10000000 --train_steps=1000

Generates uniform random k-subsets (time = daily dates) and writes them with
luce.data.write. Then, each in a fresh process:

- the in-memory peer (today's path; on by default up to 2,000,000 events,
  `--peer=false` skips it): `luce.data.read("events:...")` (read Parquet,
  check the content hash, validate every row) and `luce.data.build_features`;
- the store: the same read, then `luce.data.build_store` (chunks of
  `--chunk_events` events, item features `--dtype`, written to a folder of
  .npy shards), and with `--train_steps` luce-train's `train_and_evaluate` on
  `data.pipeline = "store"` (the store reused, Grain batches from `--workers`
  worker processes, the default MLP, no baselines, split 0.98/0.01/0.01).

Reports wall times and peak resident memory: ru_maxrss of the measuring
process (`peak_rss_gib`), of its largest worker process, and the largest sum
over the process and its workers sampled every 0.2 s (`peak_tree_rss_gib`).
The last line is one JSON object with `total_s` and `peak_rss_gib` (of the
store run). The floor of the store's writes: `store_write_floor_s`, the store's
bytes over the disk's write bandwidth (`disk_write_gib_s`: `--probe_gib` GiB
written to the same folder and fsynced, before the runs; 0 skips it).
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np


def generate(path: str, m: int, k: int, n: int, seed: int = 0) -> None:
  from luce import data as ld
  rng = np.random.default_rng(seed)
  items = np.empty((m, k), dtype=np.int32)
  for start in range(0, m, 100_000):  # chunks keep the random keys small
    stop = min(start + 100_000, m)
    items[start:stop] = np.argpartition(rng.random((stop - start, n), dtype=np.float32), k, axis=1)[:, :k]
  times = np.datetime64("1900-01-01") + np.arange(m).astype("timedelta64[D]")
  table = ld.EventTable.from_arrays(items, catalog=n, times=times, kind="set",
                                    metadata={"k": str(k)})
  ld.write(table, path)


def measure(path: str) -> dict:
  from luce import data as ld
  t0 = time.perf_counter()
  table = ld.read(f"events:{path}")
  t1 = time.perf_counter()
  feats = ld.build_features(table, ld.FeatureConfig())
  t2 = time.perf_counter()
  return {
      "events": len(table), "k": table.k, "n": table.n_items,
      "load_validate_s": round(t1 - t0, 2), "features_s": round(t2 - t1, 2),
      "total_s": round(t2 - t0, 2), "feature_shape": list(feats.item.shape),
      "feature_gib": round(feats.item.nbytes / 2**30, 2),
      "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
  }


class PeakMemory:
  """The largest RSS sum of this process and its children, sampled in a thread."""

  def __init__(self, every: float = 0.2):
    import psutil
    self.process, self.peak, self.every = psutil.Process(), 0, every
    self.done = threading.Event()
    self.thread = threading.Thread(target=self.run, daemon=True)
    self.thread.start()

  def run(self):
    import psutil
    while not self.done.is_set():
      total = 0
      try:
        for p in [self.process] + self.process.children(recursive=True):
          total += p.memory_info().rss
      except psutil.Error:
        pass
      self.peak = max(self.peak, total)
      self.done.wait(self.every)

  def stop(self) -> float:
    self.done.set()
    self.thread.join()
    return round(self.peak / 2**30, 2)


def _gib(usage) -> float:
  return round(resource.getrusage(usage).ru_maxrss / 2**20, 2)


def measure_store(path: str, folder: str, args) -> dict:
  from luce import data as ld
  sampler = PeakMemory()
  t0 = time.perf_counter()
  table = ld.read(f"events:{path}")
  t1 = time.perf_counter()
  store = ld.build_store(table, folder, dtype=args.dtype, chunk_events=args.chunk_events)
  t2 = time.perf_counter()
  result = {"events": len(table), "k": table.k, "n": table.n_items, "dtype": args.dtype,
            "chunk_events": args.chunk_events, "load_validate_s": round(t1 - t0, 2),
            "store_build_s": round(t2 - t1, 2), "build_total_s": round(t2 - t0, 2),
            "store_gib": round(sum(os.path.getsize(os.path.join(folder, f))
                                   for f in os.listdir(folder)) / 2**30, 2),
            "shards": len(store.meta["shards"]), "build_peak_rss_gib": _gib(resource.RUSAGE_SELF)}
  del table, store
  if args.train_steps:
    import luce.train
    steps = args.train_steps
    config = {"data": {"source": f"events:{path}", "pipeline": "store", "store_dir": folder,
                       "store_dtype": args.dtype, "chunk_events": args.chunk_events,
                       "workers": args.workers, "split": (0.98, 0.01, 0.01)},
              "baselines": {"names": ()},
              "train": {"batch_size": args.batch_size, "num_steps": steps, "eval_every": steps,
                        "checkpoint_every": steps, "log_every": max(steps // 10, 1),
                        "progress_bar": False}}
    t3 = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
      run = luce.train.train_and_evaluate(config, workdir, say=lambda m: print(m, file=sys.stderr))
    result.update({"train_steps": run["step"], "train_s": round(time.perf_counter() - t3, 2),
                   "events_per_second": round(run["events_per_second"] or 0.0),
                   "valid_nll": round(run["valid"]["model"]["nll_per_event"], 4),
                   "workers": args.workers, "batch_size": args.batch_size})
  result.update({"total_s": round(time.perf_counter() - t0, 2),
                 "workers_peak_rss_gib": _gib(resource.RUSAGE_CHILDREN),
                 "peak_tree_rss_gib": sampler.stop(), "peak_rss_gib": _gib(resource.RUSAGE_SELF)})
  return result


def probe_disk(folder: str, gib: float) -> float:
  """GiB/s of a buffered write of `gib` GiB to `folder`, fsync included (the page cache does
  not hide the disk)."""
  block = np.ones(1 << 24, dtype=np.uint8)  # 16 MiB
  path = os.path.join(folder, "probe.bin")
  t0 = time.perf_counter()
  with open(path, "wb") as f:
    for _ in range(max(1, int(gib * 64))):
      f.write(block)
    f.flush()
    os.fsync(f.fileno())
  seconds = time.perf_counter() - t0
  written = os.path.getsize(path) / 2**30
  os.remove(path)
  return written / seconds


def _flag(text: str) -> bool:
  return text.lower() in ("1", "true", "yes")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--events", type=int, default=1_000_000)
  parser.add_argument("--k", type=int, default=20)
  parser.add_argument("--n", type=int, default=80)
  parser.add_argument("--train_steps", type=int, default=0)
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--chunk_events", type=int, default=65_536)
  parser.add_argument("--workers", type=int, default=1)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--peer", type=_flag, default=None,
                      help="run the in-memory peer (default: up to 2,000,000 events)")
  parser.add_argument("--tmp", default=None, help="folder for the table and the store")
  parser.add_argument("--probe_gib", type=float, default=1.0,
                      help="GiB written (and fsynced) to measure the disk's write bandwidth; 0 skips")
  parser.add_argument("--generate", help=argparse.SUPPRESS)
  parser.add_argument("--measure", help=argparse.SUPPRESS)
  parser.add_argument("--measure_store", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.generate:
    generate(args.generate, args.events, args.k, args.n)
    return
  if args.measure:
    print(json.dumps(measure(args.measure)))
    return
  if args.measure_store:
    path, folder = args.measure_store.split(",")
    print(json.dumps(measure_store(path, folder, args)))
    return
  load_before = os.getloadavg()[0]
  peer = args.peer if args.peer is not None else args.events <= 2_000_000
  with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
    path = os.path.join(tmp, "events.parquet")
    disk = probe_disk(tmp, args.probe_gib) if args.probe_gib > 0 else None
    t0 = time.perf_counter()
    # In its own process: a child's ru_maxrss starts from its parent's size at fork.
    subprocess.run([sys.executable, __file__, f"--generate={path}", f"--events={args.events}",
                    f"--k={args.k}", f"--n={args.n}"], check=True)
    gen_s = time.perf_counter() - t0
    result = {}
    if peer:
      out = subprocess.run([sys.executable, __file__, f"--measure={path}"], check=True,
                           capture_output=True, text=True)
      result["memory_peer"] = json.loads(out.stdout.strip().splitlines()[-1])
    forwarded = [f"--{name}={getattr(args, name)}" for name in
                 ("train_steps", "dtype", "chunk_events", "workers", "batch_size")]
    out = subprocess.run([sys.executable, __file__, f"--measure_store={path},{tmp}/store", *forwarded],
                         check=True, capture_output=True, text=True)
    result.update(json.loads(out.stdout.strip().splitlines()[-1]))
    if disk:
      result.update({"disk_write_gib_s": round(disk, 2),
                     "store_write_floor_s": round(result["store_gib"] / disk, 2)})
    result.update({"generate_s": round(gen_s, 2), "parquet_mib": round(os.path.getsize(path) / 2**20, 1),
                   "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.python_version()}",
                   "date": time.strftime("%Y-%m-%d"), "load_before": load_before,
                   "load": os.getloadavg()[0]})
  print(json.dumps(result))


if __name__ == "__main__":
  main()
