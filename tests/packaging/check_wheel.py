"""Check an installed luce wheel: its prebuilt native kernels run with no C++
compiler anywhere on PATH, at every instruction-set level this CPU runs.

    python tests/packaging/check_wheel.py            # from .ci/run, in the wheel's venv

.ci/run runs it with PATH reduced to the wheel's venv (no g++, no c++, no $CXX)
and an empty LUCE_CACHE_DIR. For each level the CPU can execute (x86-64,
x86-64-v3, x86-64-v4 here: `luce.kernels._isa.runnable_variants`) it starts a
fresh interpreter with LUCE_NATIVE=prebuilt and LUCE_NATIVE_LEVEL=LEVEL, which

  - checks that no compiler is found and that luce is the installed copy;
  - checks `luce.kernels.info()`: pl_nll and topk_sample pick impl "cpu", the
    prebuilt library of that level;
  - runs pl_nll(impl="cpu") value and gradient against impl="xla" on fresh
    random lists (masked items, padded lists, weights, extreme scores) and
    topk_sample(impl="cpu") against the reference, with and without quotas;
  - checks that nothing was compiled into the native cache and no
    NativeKernelWarning was raised.

One more run without LUCE_NATIVE_LEVEL checks that `auto` picks the highest
level. Exit status 0 when every run passes; each prints a JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile


def check(level: str | None) -> dict:
  import warnings

  import numpy as np

  with warnings.catch_warnings():
    warnings.simplefilter("error")  # a NativeKernelWarning (a fallback) fails the check
    import jax
    import jax.numpy as jnp

    import luce
    from luce import kernels
    from luce.kernels import _isa, _native
    from luce.kernels.pl_nll import pl_nll
    from luce.kernels.topk_sample import topk_sample

    problems = []
    if _native.compiler() is not None:
      problems.append(f"a C++ compiler is on PATH: {_native.compiler()}")
    if "site-packages" not in luce.__file__:
      problems.append(f"luce is not the installed wheel: {luce.__file__}")
    want = level or _isa.best_variant()
    info = kernels.info()
    for op in ("pl_nll", "topk_sample"):
      got = info[op]
      if (got.auto, got.kind, got.level) != ("cpu", "prebuilt", want):
        problems.append(f"{op}: auto={got.auto}, kind={got.kind}, level={got.level}, not cpu/prebuilt/"
                        f"{want}: {got.why}")

    rng = np.random.default_rng(abs(hash(level or "auto")) % 2**32)
    b, n, k = 64, 300, 40
    scores = (rng.normal(size=(b, n)) * 4).astype(np.float32)
    scores[0, :5] = [80.0, -80.0, 60.0, 0.0, 1e-6]            # extreme spreads
    where = rng.random((b, n)) < 0.8
    ranking = np.full((b, k), -1, np.int32)
    for i in range(b):
      avail = np.flatnonzero(where[i])
      kk = int(rng.integers(0, min(k, len(avail)) + 1))         # padded lists, some empty
      ranking[i, :kk] = rng.choice(avail, kk, replace=False)
    weights = (rng.random((b, k)) * 2).astype(np.float32)
    args = [jnp.asarray(a) for a in (scores, ranking, where, weights)]

    def value_grad(impl):
      f = lambda s: pl_nll(s, *args[1:], impl=impl)
      return jax.jit(lambda s: (f(s), jax.grad(lambda t: f(t).sum())(s)))(args[0])

    (v_cpu, g_cpu), (v_xla, g_xla) = value_grad("cpu"), value_grad("xla")
    nll_err = float(np.max(np.abs(np.asarray(v_cpu) - np.asarray(v_xla)) / (1 + np.abs(np.asarray(v_xla)))))
    g_cpu, g_xla = np.asarray(g_cpu), np.asarray(g_xla)  # relative to the largest entry
    grad_err = float(np.max(np.abs(g_cpu - g_xla)) / (1 + np.max(np.abs(g_xla))))
    if not (nll_err < 1e-5 and grad_err < 1e-5):
      problems.append(f"pl_nll cpu against xla: relative NLL error {nll_err:.2e}, gradient {grad_err:.2e}")
    if "luce_pl_nll" not in jax.jit(lambda s: pl_nll(s, *args[1:], impl="cpu")).lower(args[0]).as_text():
      problems.append("pl_nll impl='cpu' does not call the native kernel")

    z = rng.gumbel(size=(b, n)).astype(np.float32)
    z[rng.random((b, n)) < 0.1] = -np.inf
    groups = rng.integers(0, 4, n).astype(np.int32)
    quotas = np.array([[1, 12], [0, 10], [2, 9], [0, 12]], np.int32)
    topk_equal = True
    for kw in ({}, {"groups": groups, "quotas": quotas}):
      got = np.asarray(topk_sample(z, 24, impl="cpu", **kw))
      ref = np.asarray(topk_sample(z, 24, impl="reference", **kw))
      topk_equal &= bool((got == ref).all())
    if not topk_equal:
      problems.append("topk_sample cpu differs from the reference")

    built = os.listdir(os.path.join(os.environ["LUCE_CACHE_DIR"], "native")) if os.path.isdir(
        os.path.join(os.environ["LUCE_CACHE_DIR"], "native")) else []
    if built:
      problems.append(f"something was compiled at run time: {built}")
  return {"level": level or "auto", "picked": info["pl_nll"].level, "pl_nll_rel_err": nll_err,
          "grad_err": grad_err, "topk_equal": topk_equal, "problems": problems}


def main() -> int:
  if len(sys.argv) > 1 and sys.argv[1] == "--one":
    result = check(sys.argv[2] if len(sys.argv) > 2 else None)
    print(json.dumps(result))
    return 1 if result["problems"] else 0
  from luce.kernels import _isa
  levels = _isa.runnable_variants()
  failed = 0
  for level in [*levels, None]:
    with tempfile.TemporaryDirectory() as cache:
      env = dict(os.environ, LUCE_NATIVE="prebuilt", LUCE_CACHE_DIR=cache, JAX_PLATFORMS="cpu")
      env.pop("LUCE_NATIVE_LEVEL", None)
      env.pop("CXX", None)
      if level is not None:
        env["LUCE_NATIVE_LEVEL"] = level
      cmd = [sys.executable, os.path.abspath(__file__), "--one", *([level] if level else [])]
      done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
      line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
      print(line or f"level {level}: no result", flush=True)
      if done.returncode != 0:
        failed += 1
        print(done.stderr[-4000:], file=sys.stderr)
  print(f"check_wheel: {len(levels) + 1 - failed} of {len(levels) + 1} runs passed "
        f"(levels {', '.join(levels)}, then auto)")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
