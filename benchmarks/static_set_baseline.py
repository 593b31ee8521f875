"""Static set baseline refits over the expanding windows of a walk-forward (20-of-80 sets).

    git show 1a9b500:lib/baselines.py > /tmp/old_baselines.py   # the Adam-300 version
    python benchmarks/static_set_baseline.py

Times `luce.baselines._fit_set` (L-BFGS to a gradient tolerance, one compile per
256-event window bucket) on 5 windows of 1000..1800 sets against the previous
version (300 Adam steps, recompiled on every call) when /tmp/old_baselines.py
exists, and prints the largest difference between their fits.
"""
import os
import sys
import time

import numpy as np

from luce import baselines

sys.path.insert(0, "/tmp")
try:
  import old_baselines
except ImportError:
  old_baselines = None
rng = np.random.default_rng(0)
m, n, k = 2000, 80, 20
theta0 = rng.normal(size=n) * 0.5
items = np.argsort(-(theta0 + rng.gumbel(size=(m, n))), axis=1)[:, :k].astype(np.int32)
avail = np.ones((m, n), bool)
windows = [1000, 1200, 1400, 1600, 1800]
print("load", os.getloadavg())
fits = [("new lbfgs", baselines._fit_set)]
if old_baselines is not None:
  fits.insert(0, ("old adam-300", old_baselines._fit_set))
old = None
for name, fit in fits:
  t0 = time.perf_counter()
  thetas = []
  for w in windows:
    thetas.append(fit(items[:w], avail[:w], 0.01))
  dt = time.perf_counter() - t0
  print(f"{name}: {dt:.2f}s for {len(windows)} refits; corr with truth {np.corrcoef(thetas[-1], theta0)[0,1]:.4f}")
  if name.startswith("old"):
    old = thetas
if old is not None:
  print("max |new - old| over refits", max(np.abs(a - b).max() for a, b in zip(old, thetas)))
print("load", os.getloadavg())
