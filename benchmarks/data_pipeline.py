"""Benchmark: load + validate + build features for 1,000,000 events of 20 of 80.

    python benchmarks/data_pipeline.py [--events=1000000] [--k=20] [--n=80]

Generates uniform random k-subsets (time = daily dates), writes them with
luce.data.write, then in a fresh process times `luce.data.read("events:...")`
(read Parquet, check the content hash, validate every row) and
`luce.data.build_features` (default FeatureConfig), and reports wall time and
peak resident memory (ru_maxrss) of that process. Should print a JSON line with
`total_s` under 60 on a 2-core machine.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
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


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--events", type=int, default=1_000_000)
  parser.add_argument("--k", type=int, default=20)
  parser.add_argument("--n", type=int, default=80)
  parser.add_argument("--measure", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.measure:
    print(json.dumps(measure(args.measure)))
    return
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "events.parquet")
    t0 = time.perf_counter()
    generate(path, args.events, args.k, args.n)
    gen_s = time.perf_counter() - t0
    out = subprocess.run([sys.executable, __file__, f"--measure={path}"], check=True,
                         capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update({"generate_s": round(gen_s, 2), "parquet_mib": round(os.path.getsize(path) / 2**20, 1),
                   "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.python_version()}",
                   "date": time.strftime("%Y-%m-%d")})
  print(json.dumps(result))


if __name__ == "__main__":
  main()
