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
# # Scoring and fitting rankings in a research script
#
# This tutorial uses luce as a library: score lists and sets under
# Plackett-Luce, then fit static driver strengths to the 2002 NASCAR season
# with standard errors. It reads `rankings/nascar2002_*.csv` from
# `$LUCE_SHARED_DATA` and runs in a few seconds on a CPU; it also runs as a
# plain script (`python docs/tutorials/01_scoring_and_fitting.py`). Figures go
# to `$LUCE_TUTORIAL_OUT` (default: a temporary folder).

# %%
import os
import sys
import tempfile

import jax.numpy as jnp
import matplotlib
import numpy as np

import luce
import luce.data

if "ipykernel" not in sys.modules:
  matplotlib.use("Agg")               # a plain script: write the PNGs, show nothing
import matplotlib.pyplot as plt

OUT = os.environ.get("LUCE_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="luce-tutorial-")
os.makedirs(OUT, exist_ok=True)

# %% [markdown]
# ## Scoring a list and a set
#
# Scores are log-worths, one per item. A ranking is item ids best first, `-1`
# padding the end of a shorter (top-k) list. `luce.pl_log_prob` gives the
# log-probability of the ordered list; `luce.pl_set_log_prob` that of the same
# items as an unordered set, which is the sum over their orders.

# %%
scores = jnp.array([0.0, 1.0, 2.0, -1.0])
top2 = jnp.array([2, 1, -1, -1])
log_list = luce.pl_log_prob(scores, top2)
log_set = luce.pl_set_log_prob(scores, jnp.array([2, 1]))
log_other_order = luce.pl_log_prob(scores, jnp.array([1, 2, -1, -1]))
print(f"log P(list 2 > 1)      = {float(log_list):.4f}")
print(f"log P(set {{2, 1}})      = {float(log_set):.4f}")
print(f"log-sum-exp of orders  = {float(jnp.logaddexp(log_list, log_other_order)):.4f}")

# %% [markdown]
# Both are batched over leading axes, jit-able and differentiable. `where=`
# marks the items each event could choose from.

# %%
batch = jnp.stack([scores, scores + jnp.array([0.0, 0.0, -3.0, 0.0])])
print(luce.pl_log_prob(batch, jnp.array([[2, 1, 0, 3], [1, 0, 3, 2]])))
print(luce.pl_set_log_prob(batch, jnp.array([[2, 1], [1, 0]]),
                           where=jnp.array([[True] * 4, [True, True, True, False]])))

# %% [markdown]
# ## The 2002 NASCAR season
#
# 36 races, 87 drivers, each race ranking its 43 entrants. `luce.data.read`
# reads the file into an event table; each race chose among its entrants only,
# so the availability is the listed drivers (`luce.listed_items`).

# %%
table = luce.data.read("rankings:rankings/nascar2002_orderings.csv"
                       "?catalog=rankings/nascar2002_drivers.csv")
rankings = table.items_array()
n = len(table.catalog.labels)
names = np.array(table.catalog.names)
print(table.kind, rankings.shape, n, "drivers")

# %% [markdown]
# `luce.fit_pl` maximises the Plackett-Luce likelihood by Newton's method (a
# small ridge prior by default) and returns standard errors from the Fisher
# information. `luce.check_connected` says whether the maximum-likelihood
# estimate exists at all: a driver who never beat anyone has strength
# $-\infty$ without the prior.

# %%
where = luce.listed_items(rankings, n)
connectivity = luce.check_connected(rankings, n, where=where)
print("win graph strongly connected (MLE exists):", connectivity.connected,
      f"({len(connectivity.components)} components)")
fit = luce.fit_pl(rankings, n, where=where)
table_ = luce.summary_table(fit)
order = np.argsort(-table_["estimate"])
print(f"log-likelihood {fit.log_likelihood:.1f}, {fit.n_iter} Newton iterations")
print(f"{'driver':24s} {'estimate':>9s} {'se':>6s} {'quasi-se':>9s}")
for i in order[:10]:
  print(f"{str(names[i]):24s} {table_['estimate'][i]:9.3f} {table_['se'][i]:6.3f} "
        f"{table_['quasi_se'][i]:9.3f}")

# %% [markdown]
# The figure shows every driver's log-strength with a 95% interval from its
# quasi standard error (comparisons between drivers do not depend on the
# sum-to-zero constraint). Drivers who raced only a few times get wide
# intervals: the prior pulls them towards 0.

# %%
est, qse = table_["estimate"][order], table_["quasi_se"][order]
fig, ax = plt.subplots(figsize=(9, 3.5))
ax.errorbar(np.arange(n), est, yerr=1.96 * np.nan_to_num(qse), fmt="o", ms=3, lw=0.8)
ax.axhline(0.0, color="grey", lw=0.5)
ax.set_xlabel("driver (strongest first)")
ax.set_ylabel("log-strength")
ax.set_title("NASCAR 2002: Plackett-Luce strengths, 95% quasi intervals")
fig.tight_layout()
fig.savefig(os.path.join(OUT, "nascar_strengths.png"), dpi=100)
plt.show()
print("wrote", os.path.join(OUT, "nascar_strengths.png"))

# %% [markdown]
# With strengths in hand, the fitted model scores any race: here the first
# race's observed top 5 against the model's own most likely top 5 (the five
# strongest entrants, strongest first).

# %%
theta = jnp.asarray(fit.log_strengths)
first = jnp.asarray(rankings[0])
avail = jnp.asarray(where[0])
observed = luce.pl_log_prob(theta, first.at[5:].set(-1), where=avail)
entrants = np.flatnonzero(where[0])
mode = entrants[np.argsort(-fit.log_strengths[entrants])][:5]
likeliest = luce.pl_log_prob(theta, jnp.concatenate([jnp.asarray(mode), -jnp.ones(len(first) - 5, int)]),
                             where=avail)
print(f"log P(observed top 5) = {float(observed):.2f}, "
      f"log P(five strongest entrants) = {float(likeliest):.2f}")
