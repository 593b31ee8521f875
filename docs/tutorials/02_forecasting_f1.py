# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Forecasting F1 with luce-train and luce-backtest
#
# The command-line launchers run the whole pipeline from a config file:
# `configs/f1.py` forecasts each Formula 1 race's finishing order from what is
# known before it (grid slot, the constructor's form, each driver's recent
# results). This tutorial calls the console scripts from Python, as a
# research script or a notebook would, and reads the report they write.
#
# **The step counts here are tiny, for CI**: a few dozen training steps and a
# backtest over one season, so the tutorial runs in well under a minute on
# two CPU cores. The real run is `luce-backtest --config=configs/f1.py
# --workdir=/tmp/luce-f1` (2010-2019, 500 + 100 steps per fold); its numbers
# are in the README and on the benchmarks page. It needs the Ergast files in
# `$LUCE_SHARED_DATA`.

# %%
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import matplotlib

import luce.configs

if "ipykernel" not in sys.modules:
  matplotlib.use("Agg")               # a plain script: write the PNGs, show nothing
import matplotlib.pyplot as plt

OUT = pathlib.Path(os.environ.get("LUCE_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="luce-tutorial-"))
WORK = OUT / "f1"
shutil.rmtree(WORK, ignore_errors=True)      # start fresh: the launchers resume a workdir
WORK.mkdir(parents=True)
CONFIG = str(pathlib.Path(luce.configs.__file__).parent / "f1.py")


def script(name: str) -> str:
  """The console script beside this Python (a venv's bin/), else on PATH."""
  here = pathlib.Path(sys.executable).parent / name
  return str(here) if here.exists() else (shutil.which(name) or name)


def run(*args: str) -> str:
  """Run a luce console script; print and return its output, fail on an error."""
  proc = subprocess.run([script(args[0]), *args[1:]], capture_output=True, text=True)
  print(proc.stdout[-4000:] + proc.stderr[-4000:])
  if proc.returncode:
    raise RuntimeError(f"{args[0]} exited with status {proc.returncode}")
  return proc.stdout


# %% [markdown]
# `CONFIG` is the config file shipped with the package (`luce.configs.f1`);
# in a checkout it is `configs/f1.py`. Any field is overridden with
# `--config.FIELD=VALUE`.

# %%
print(CONFIG)

# %% [markdown]
# ## One train/validation/test split: luce-train
#
# luce-train trains on the races before 2017, validates on 2017 and prints the
# validation NLL (nats per race) of the best checkpoint beside the baselines.
# Running it again with the same `--workdir` resumes.

# %%
train_dir = WORK / "train"
run("luce-train", f"--config={CONFIG}", f"--workdir={train_dir}",
    "--config.train.num_steps=40", "--config.train.eval_every=20", "--config.train.checkpoint_every=20",
    "--config.train.progress_bar=False")
print(sorted(p.name for p in train_dir.iterdir()))

# %% [markdown]
# ## Walk forward: luce-backtest
#
# A backtest predicts each race from a model trained only on earlier races,
# retraining (warm-started) every `retrain_every` races, and scores every
# baseline on the same races. Here: the 2019 season, one refit.

# %%
bt_dir = WORK / "backtest"
run("luce-backtest", f"--config={CONFIG}", f"--workdir={bt_dir}",
    "--config.backtest.start=2019-01-01", "--config.backtest.retrain_every=25",
    "--config.backtest.first_steps=60", "--config.backtest.retrain_steps=20",
    "--config.backtest.bootstrap_samples=200", "--config.backtest.importance=False",
    "--config.train.progress_bar=False")

# %% [markdown]
# ## Reading the report
#
# `report/` holds `report.md` and `report.html` (the tables, the verdict in
# words and the plots) and `metrics.json`, the same numbers for a script.
# The skill over a baseline is the baseline's NLL minus the model's, per
# race, with a block-bootstrap 95% interval and a Diebold-Mariano p-value:
# an interval above 0 is skill, one that contains 0 is no evidence of skill.

# %%
metrics = json.loads((bt_dir / "report" / "metrics.json").read_text())
print(f"{metrics['events']} races, {metrics['unit']} ({metrics['nll']} NLL)")
for name, s in metrics["skill"].items():
  print(f"  {name:18s} {s['mean']:+.3f}  [{s['ci_low']:+.3f}, {s['ci_high']:+.3f}]  "
        f"p = {s['p_value']:.3g}")
for name in metrics["verdicts"]:
  print("-", metrics["verdicts"][name])

# %%
names = list(metrics["skill"])
mean = [metrics["skill"][n]["mean"] for n in names]
low = [metrics["skill"][n]["mean"] - metrics["skill"][n]["ci_low"] for n in names]
high = [metrics["skill"][n]["ci_high"] - metrics["skill"][n]["mean"] for n in names]
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.errorbar(mean, range(len(names)), xerr=[low, high], fmt="o", capsize=3)
ax.axvline(0.0, color="grey", lw=0.8)
ax.set_yticks(range(len(names)), names)
ax.set_xlabel("skill over the baseline (nats per race), 95% CI")
ax.set_title("F1 2019 walk-forward (tiny CI run)")
fig.tight_layout()
fig.savefig(OUT / "f1_skill.png", dpi=100)
plt.show()
print("wrote", OUT / "f1_skill.png")

# %% [markdown]
# With so few steps the model is far from converged, and 21 races give wide
# intervals: read this run for the mechanics, not the numbers. The full
# 2010-2019 backtest gives intervals well above 0 over every baseline.
