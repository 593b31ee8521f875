"""The wheel's prebuilt native kernels per instruction-set level, against the
first-use build (-march=native) and XLA, on this CPU.

    python -m benchmarks.native_levels [--shape=256x1024x64] [--rounds=3]

Builds the prebuilt libraries as setup.py does (`luce.kernels._isa.build_prebuilt`)
into a temporary folder, then for each level this CPU runs (x86-64,
x86-64-v3, x86-64-v4), for the -march=native build of a source checkout and for
impl="xla", starts a fresh process that times, jitted and warm:

  - pl_nll value + gradient of Σ weights·NLL on B lists of k of n items;
  - topk_sample of k of n (no quotas) on the same B rows.

Rounds interleave the variants (each round runs every variant once, in a
fresh process), and the table gives the median over rounds of each variant's
median time. The last line is a JSON object of the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
ONE = r'''
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
from luce.kernels.pl_nll import pl_nll
from luce.kernels.topk_sample import topk_sample
from luce import kernels
sys.path.insert(0, sys.argv[3])
from benchmarks._timing import time_call
b, n, k = map(int, sys.argv[1].split("x"))
impl = sys.argv[2]
rng = np.random.default_rng(0)
s = jnp.asarray(rng.normal(size=(b, n)).astype(np.float32) * 3)
r = jnp.asarray(np.argsort(rng.random((b, n)), axis=1)[:, :k].astype(np.int32))
vg = jax.jit(jax.value_and_grad(lambda x: pl_nll(x, r, impl=impl).sum()))
tk = jax.jit(lambda z: topk_sample(z, k, impl=impl))
out = {"pl_nll_vg_ms": 1e3 * time_call(lambda: jax.block_until_ready(vg(s)))["median_s"],
       "topk_ms": 1e3 * time_call(lambda: jax.block_until_ready(tk(s)))["median_s"]}
info = kernels.info()["pl_nll"]
out["picked"] = f"{info.auto}/{info.kind}/{info.level}"
print(json.dumps(out))
'''


def run(shape: str, impl: str, env: dict) -> dict:
  done = subprocess.run([sys.executable, "-c", ONE, shape, impl, str(REPO)], capture_output=True,
                        text=True, env=env, timeout=900, cwd=REPO)
  if done.returncode != 0:
    raise SystemExit(f"{impl} {env.get('LUCE_NATIVE_LEVEL')} failed:\n{done.stderr[-3000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--shape", default="256x1024x64", help="BxNxK")
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  from luce.kernels import _isa, _native
  from benchmarks._timing import machine
  folder = tempfile.mkdtemp(prefix="luce-prebuilt-")
  kernels = [(op, str(REPO / "kernels" / rel)) for op, rel in _isa.KERNELS]
  _isa.build_prebuilt(folder, kernels, _native.INCLUDE_DIR)
  base = {k: v for k, v in os.environ.items() if not k.startswith("LUCE_NATIVE")}
  base.update(JAX_PLATFORMS="cpu", LUCE_PL_NLL_THREADS="1", LUCE_TOPK_THREADS="1")
  variants = {f"prebuilt {lv}": ("cpu", dict(base, LUCE_NATIVE="prebuilt", LUCE_NATIVE_PREBUILT_DIR=folder,
                                                LUCE_NATIVE_LEVEL=lv))
              for lv in _isa.runnable_variants()}
  variants["built here (-march=native)"] = ("cpu", dict(base, LUCE_NATIVE="build"))
  variants["xla"] = ("xla", dict(base, LUCE_NATIVE="0"))
  results = {name: [] for name in variants}
  for i in range(args.rounds):
    for name, (impl, env) in variants.items():
      results[name].append(run(args.shape, impl, env))
      print(f"round {i} {name}: {results[name][-1]}", flush=True)
  table = {}
  for name, rows in results.items():
    table[name] = {key: statistics.median(r[key] for r in rows) for key in ("pl_nll_vg_ms", "topk_ms")}
    table[name]["picked"] = rows[-1]["picked"]
  ref = table["xla"]
  print(f"\n{args.shape}, one thread per kernel call, median of {args.rounds} rounds")
  print("| variant | picked | pl_nll value+grad | vs xla | topk_sample | vs xla |")
  print("| --- | --- | ---: | ---: | ---: | ---: |")
  for name, row in table.items():
    print(f"| {name} | {row['picked']} | {row['pl_nll_vg_ms']:.3f} ms | "
          f"{ref['pl_nll_vg_ms'] / row['pl_nll_vg_ms']:.2f}x | {row['topk_ms']:.3f} ms | "
          f"{ref['topk_ms'] / row['topk_ms']:.2f}x |")
  print(json.dumps({"shape": args.shape, "machine": machine(), "results": table}))


if __name__ == "__main__":
  main()
