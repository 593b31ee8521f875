"""Smoke run: every encoder, a stacked ensemble and both families through luce-train
(`luce.train.train_and_evaluate`) and luce-backtest (`luce.eval.walk_forward`) on every
shipped config, a few steps each (not a benchmark: it checks that each combination runs).

    LUCE_SHARED_DATA=../shared/data python -m benchmarks.zoo_smoke   # ~25 min on 2 cores

Prints one line per config x variant ("ok ..." with the validation and walk-forward NLL,
or "FAIL ..." with the error) and writes benchmarks/out/zoo_smoke.json.
"""
import importlib
import json
import os
import tempfile
import time

import numpy as np
import luce.train
from luce.eval import walk_forward
configs = ["f1", "nascar", "sp500", "powerball", "synthetic"]
variants = {"mlp": {}, "itransformer": {"encoder": "itransformer"}, "transformer": {"encoder": "transformer"},
            "s5": {"encoder": "s5"}, "deepar": {"encoder": "deepar"}, "dsd": {"family": "diffusion"},
            "ens": {"ensemble": {"members": ("encoder=mlp", "family=diffusion"), "weights": "stacked"}}}
out = {}
for name in configs:
  for v, over in variants.items():
    c = importlib.import_module(f"luce.configs.{name}").get_config()
    for key, val in over.items():
      if key == "ensemble":
        c.model.ensemble.members = val["members"]
        c.model.ensemble.weights = val["weights"]
      else:
        c.model[key] = val
    c.train.update(num_steps=4, eval_every=2, checkpoint_every=2, log_every=2, progress_bar=False,
                   async_checkpoints=False)
    c.backtest.update(first_steps=2, retrain_steps=1, importance=False, calibration_samples=4)
    if name == "sp500":
      c.backtest.start = "2021-06-01"
    t0 = time.perf_counter()
    try:
      with tempfile.TemporaryDirectory() as d:
        r = luce.train.train_and_evaluate(c, d + "/t", say=lambda *a: None)
        wf = walk_forward(c, d + "/b", progress=False, say=lambda *a: None)
        res = f"ok train valid nll {r['valid']['model']['nll_per_event']:.3f} ({r['nll']}); backtest {len(wf.folds)} folds mean nll {float(np.mean(wf.nll['model'])):.3f}"
    except Exception as e:  # noqa: BLE001
      res = f"FAIL {type(e).__name__}: {str(e)[:200]}"
    out[f"{name}/{v}"] = res
    print(f"{name:10s} {v:13s} {time.perf_counter() - t0:6.1f}s {res}", flush=True)
os.makedirs("benchmarks/out", exist_ok=True)
with open("benchmarks/out/zoo_smoke.json", "w") as f:
  json.dump(out, f, indent=1)
