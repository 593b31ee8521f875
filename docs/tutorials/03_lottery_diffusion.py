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
# # Subset diffusion on a lottery, and why it reports no skill
#
# Powerball draws 5 white balls of 69. The draw is fair by design: every set
# of five is equally likely, so the best forecaster is the uniform one, with
# NLL $\log \binom{69}{5} \approx 16.23$ nats per draw. A model that claims
# to beat it is overfitting, and the backtest has to say so.
#
# Here the discrete subset diffusion (`--config.model.family=diffusion`, a
# masked diffusion over the 5 slots of the set; see
# [the model](../math/diffusion.md)) is walked forward over the last draws of
# `draws/powerball.csv` (from `$LUCE_SHARED_DATA`). **The step counts are
# tiny, for CI** (tens of steps, one refit): the tutorial runs in well under a
# minute. The full run is `luce-backtest --config=configs/powerball.py
# --config.model.family=diffusion --workdir=/tmp/luce-pb-dsd`.

# %%
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import matplotlib

if "ipykernel" not in sys.modules:
  matplotlib.use("Agg")               # a plain script: write the PNGs, show nothing
import matplotlib.pyplot as plt

import luce.configs

OUT = pathlib.Path(os.environ.get("LUCE_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="luce-tutorial-"))
WORK = OUT / "powerball"
shutil.rmtree(WORK, ignore_errors=True)
WORK.mkdir(parents=True)
CONFIG = str(pathlib.Path(luce.configs.__file__).parent / "powerball.py")
print(f"uniform NLL: log C(69, 5) = {math.log(math.comb(69, 5)):.4f} nats per draw")


def script(name: str) -> str:
  """The console script beside this Python (a venv's bin/), else on PATH."""
  here = pathlib.Path(sys.executable).parent / name
  return str(here) if here.exists() else (shutil.which(name) or name)


# %%
args = [script("luce-backtest"), f"--config={CONFIG}", f"--workdir={WORK}",
        "--config.model.family=diffusion", "--config.model.hidden=16",
        "--config.backtest.start=2026-01-01", "--config.backtest.retrain_every=100",
        "--config.backtest.first_steps=30", "--config.backtest.retrain_steps=10",
        "--config.backtest.bootstrap_samples=200", "--config.backtest.calibration_samples=32",
        "--config.backtest.importance=False", "--config.train.progress_bar=False"]
proc = subprocess.run(args, capture_output=True, text=True)
print(proc.stdout[-5000:] + proc.stderr[-3000:])
assert proc.returncode == 0, f"luce-backtest exited with status {proc.returncode}"

# %% [markdown]
# ## The verdict
#
# `metrics.json` has each model's NLL and the skill over each baseline with
# its interval. On a fair lottery the interval of the skill over uniform
# contains 0 (no evidence of skill) or lies below it (the model is worse than
# chance, which a model that learned anything from past draws must be): it
# must never lie above 0.

# %%
metrics = json.loads((WORK / "report" / "metrics.json").read_text())
uniform = metrics["skill"]["uniform"]
print(f"model NLL {metrics['models']['model']['nll']:.4f}, uniform {metrics['models']['uniform']['nll']:.4f} "
      f"({metrics['nll']} NLL; the diffusion's is exact for k = 5)")
print(f"skill over uniform {uniform['mean']:+.4f} nats per draw, "
      f"95% CI [{uniform['ci_low']:+.4f}, {uniform['ci_high']:+.4f}]")
print(metrics["verdicts"]["uniform"])
assert uniform["ci_low"] <= 0.0, "a model that beats a fair lottery is overfitting"

# %%
names = list(metrics["models"])
nll = [metrics["models"][n]["nll"] for n in names]
fig, ax = plt.subplots(figsize=(6.5, 3))
ax.barh(range(len(names)), nll)
ax.axvline(math.log(math.comb(69, 5)), color="k", lw=0.8, ls="--", label="log C(69, 5)")
ax.set_yticks(range(len(names)), names)
ax.set_xlim(min(nll) - 0.3, max(nll) + 0.3)
ax.set_xlabel("NLL (nats per draw), lower is better")
ax.set_title("Powerball walk-forward (tiny CI run)")
ax.legend(loc="lower right")
fig.tight_layout()
fig.savefig(OUT / "powerball_nll.png", dpi=100)
plt.show()
print("wrote", OUT / "powerball_nll.png")

# %% [markdown]
# Why no skill is the right answer: the draws are independent and uniform, so
# every feature of the past (pick frequencies, recency, co-occurrence) carries
# no information about the next draw. Any model other than the uniform one
# puts less probability on some sets and more on others, and on average it
# loses $\mathrm{KL}(\text{uniform} \,\|\, p_\theta) \ge 0$ nats per draw. The
# report's job is to tell that loss, and luck, from skill: the bootstrap
# interval over the draws does. The full run (benchmarks page) finds every
# model significantly below uniform, by a few hundredths of a nat per draw.
