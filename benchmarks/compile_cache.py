"""Time to the first training step with JAX's persistent compilation cache, cold and warm.

    python -m benchmarks.compile_cache                        # f1 and sp500, 3 pairs each
    python -m benchmarks.compile_cache --configs=f1 --pairs=1

Each pair runs a fresh Python process twice on the same config and a fresh
workdir, as luce-train does (`use_compilation_cache`, then
`train_and_evaluate`): first with an empty cache folder (cold: every function
is compiled), then with that folder (warm: compiled functions are read back).
Per run: `seconds_to_first_step` (from the call to the first step's results:
reading the data, fitting the baselines, initialising, and the compiles of all
three), the train step's compile time, the import time of luce (no cache can
change it), and the wall time of the whole run (a few steps and the evaluation
against the baselines). Medians over pairs; the ratios are cold / warm. The last
line is a JSON object of the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
RUN = r'''
import json, sys, time
t0 = time.perf_counter()
from ml_collections import config_flags
import luce.train as lt
imported = time.perf_counter() - t0
config_name, workdir, cache, steps = sys.argv[1:5]
config = config_flags.config_flags._LoadConfigModule("c", f"configs/{config_name}.py").get_config()
config.train.num_steps, config.train.progress_bar = int(steps), False
config.compile_cache.dir = cache
lt.use_compilation_cache(config)
out = lt.train_and_evaluate(config, workdir, say=lambda *a, **k: None)
print(json.dumps({"first_step_s": out["seconds_to_first_step"], "compile_s": out["compile_seconds"],
                  "import_s": imported, "total_s": time.perf_counter() - t0}))
'''
KEYS = ("first_step_s", "compile_s", "import_s", "total_s")


def one_run(config: str, workdir: pathlib.Path, cache: pathlib.Path, steps: int) -> dict:
  env = dict(os.environ)
  for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
    env.pop(name, None)
  proc = subprocess.run([sys.executable, "-c", RUN, config, str(workdir), str(cache), str(steps)],
                        cwd=REPO, capture_output=True, text=True, env=env, timeout=1800)
  if proc.returncode != 0:
    raise SystemExit(f"the {config} run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="f1,sp500")
  parser.add_argument("--pairs", type=int, default=3)
  parser.add_argument("--steps", type=int, default=5, help="train steps of each run")
  args = parser.parse_args()
  out = {}
  root = pathlib.Path(tempfile.mkdtemp(prefix="luce-compile-cache-"))
  try:
    for config in args.configs.split(","):
      runs = {"cold": [], "warm": []}
      for pair in range(args.pairs):
        cache = root / f"{config}-{pair}-cache"
        for kind in ("cold", "warm"):
          runs[kind].append(one_run(config, root / f"{config}-{pair}-{kind}", cache, args.steps))
          print(f"{config} pair {pair} {kind}: " + ", ".join(
              f"{k} {v:.2f}" for k, v in runs[kind][-1].items()), flush=True)
        files = [p for p in cache.rglob("*") if p.is_file()]
        runs.setdefault("cache_mib", []).append(sum(p.stat().st_size for p in files) / 2**20)
        runs.setdefault("cache_entries", []).append(len(files))
      row = {}
      for kind in ("cold", "warm"):
        for key in KEYS:
          row[f"{kind}_{key}"] = round(statistics.median(r[key] for r in runs[kind]), 2)
      for key in KEYS:
        row[f"ratio_{key}"] = round(row[f"cold_{key}"] / max(row[f"warm_{key}"], 1e-9), 2)
      row["cache_mib"] = round(statistics.median(runs["cache_mib"]), 2)
      row["cache_entries"] = int(statistics.median(runs["cache_entries"]))
      out[config] = row
    print()
    print("| config | to first step, cold | warm | ratio | train-step compile, cold | warm | ratio "
          "| import luce | whole process, cold | warm | ratio | cache |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for config, r in out.items():
      print(f"| {config} | {r['cold_first_step_s']} s | {r['warm_first_step_s']} s | "
            f"{r['ratio_first_step_s']}x | {r['cold_compile_s']} s | {r['warm_compile_s']} s | "
            f"{r['ratio_compile_s']}x | {r['cold_import_s']} s | {r['cold_total_s']} s | "
            f"{r['warm_total_s']} s | {r['ratio_total_s']}x | {r['cache_entries']} files, "
            f"{r['cache_mib']} MiB |")
    print(json.dumps(out))
  finally:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  main()
