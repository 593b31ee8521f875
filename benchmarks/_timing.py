"""Timing helpers shared by the benchmarks: repeat-and-median, machine info."""

from __future__ import annotations

import concurrent.futures
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import time

import numpy as np


def cores() -> int:
  """CPU cores this process may run on (not the host's total)."""
  return len(os.sched_getaffinity(0))


def time_call(fn, *, warmup: int = 2, min_repeats: int = 5, max_repeats: int = 50,
              min_seconds: float = 1.0) -> dict:
  """Median wall time of `fn()` after `warmup` calls.

  `fn` must block until its result is ready (e.g. end with
  `jax.block_until_ready`). Repeats until both `min_repeats` calls and
  `min_seconds` have passed, or `max_repeats` calls.
  """
  for _ in range(warmup):
    fn()
  times = []
  start = time.perf_counter()
  while len(times) < max_repeats:
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
    if len(times) >= min_repeats and time.perf_counter() - start >= min_seconds:
      break
  t = np.array(times)
  return {"median_s": float(np.median(t)), "min_s": float(t.min()),
          "q25_s": float(np.quantile(t, 0.25)), "q75_s": float(np.quantile(t, 0.75)),
          "repeats": len(times)}


def parallel(fn, threads: int):
  """Run fn(i) for i in range(threads) at once; numpy releases the GIL in copies
  and ufuncs, so this uses `threads` cores."""
  if threads == 1:
    fn(0)
    return
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    list(pool.map(fn, range(threads)))


def copy_seconds(nbytes: int, repeats: int = 7) -> dict:
  """Best and median time to copy `nbytes` of float32 with numpy.

  Copies with one thread and with one thread per core (each its slice) and
  keeps the faster setting. A copy reads and writes every byte: 2 × nbytes
  move. Arrays that fit in cache are copied from cache, as a benchmark that
  repeats a call on the same inputs sees them.
  """
  src = np.ones(max(nbytes // 4, 1), np.float32)
  dst = np.empty_like(src)
  np.copyto(dst, src)  # fault the pages in
  best = None
  for threads in sorted({1, cores()}):
    parts = np.array_split(np.arange(src.size), threads)
    bounds = [(int(p[0]), int(p[-1]) + 1) for p in parts if p.size]

    def part(i):
      lo, hi = bounds[i]
      np.copyto(dst[lo:hi], src[lo:hi])
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      parallel(part, len(bounds))
      times.append(time.perf_counter() - t0)
    res = {"threads": threads, "min_s": float(np.min(times)),
           "median_s": float(np.median(times))}
    if best is None or res["min_s"] < best["min_s"]:
      best = res
  return best


def copy_bandwidth(mib: int = 256, repeats: int = 7) -> dict:
  """Memory bandwidth in bytes/s from copying a `mib` MiB array (see copy_seconds)."""
  t = copy_seconds(mib * 2**20, repeats)
  return {"array_mib": mib, "threads": t["threads"],
          "bytes_per_s_best": 2 * mib * 2**20 / t["min_s"],
          "bytes_per_s_median": 2 * mib * 2**20 / t["median_s"]}


def machine(packages=("jax", "jaxlib", "numpy")) -> dict:
  """Where and when: CPU model, cores, load average, versions, date."""
  model = ""
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next((l.split(":", 1)[1].strip() for l in out.splitlines()
                  if l.startswith("Model name")), "")
  except OSError:
    pass
  versions = {}
  for p in packages:
    try:
      versions[p] = importlib.metadata.version(p)
    except importlib.metadata.PackageNotFoundError:
      versions[p] = None
  return {"cpu": model, "cores": cores(), "machine": platform.machine(),
          "python": platform.python_version(), "loadavg": os.getloadavg(),
          "date": datetime.datetime.now().isoformat(timespec="seconds"),
          "versions": versions}


def write_json(obj, path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f, indent=1)


def time_interleaved(fns: dict, *, warmup: int = 2, rounds: int = 7,
                     round_seconds: float = 0.3) -> dict:
  """Median per-call wall time of each `fns[name]()`, measured in rounds.

  Each round calls every function in turn (about `round_seconds` each), so a
  change in machine load hits all of them alike and their ratios stay fair.
  Every function must block until its result is ready.
  """
  calls = {}
  for name, fn in fns.items():
    for _ in range(warmup):
      fn()
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    calls[name] = max(1, int(round_seconds / max(one, 1e-6)))
  times = {name: [] for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      for _ in range(calls[name]):
        t0 = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - t0)
  out = {}
  for name, ts in times.items():
    t = np.array(ts)
    out[name] = {"median_s": float(np.median(t)), "min_s": float(t.min()),
                 "q25_s": float(np.quantile(t, 0.25)),
                 "q75_s": float(np.quantile(t, 0.75)), "calls": len(ts)}
  return out


def git_state(paths=("lib", "kernels")) -> dict:
  """HEAD commit and whether `paths` have uncommitted changes (what was measured)."""
  def git(*a):
    return subprocess.run(["git", *a], capture_output=True, text=True, check=False).stdout.strip()
  return {"commit": git("rev-parse", "HEAD"),
          "dirty": git("status", "--porcelain", "--", *paths).splitlines()}
