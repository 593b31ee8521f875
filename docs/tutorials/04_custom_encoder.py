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
# # Writing and registering your own encoder
#
# luce's neural Plackett-Luce scorer (`luce.models.PLScorer`) ships five
# history encoders (`model.encoder = mlp | transformer | itransformer | s5 |
# deepar`). A new one is a Flax module that maps an event's batch to one score
# per item; wrapped in a *model family* and registered in
# `luce.train.FAMILIES`, it trains and evaluates through the same loop
# (`Trainer.fit`) as every built-in model, with checkpoints, early stopping
# and the baselines, and so does it in luce-train, luce-eval and every
# walk-forward fold once the registration is imported.
#
# The data are synthetic (`synthetic:ranking`: draws from a known
# context-dependent Plackett-Luce model, whose scores give the oracle's NLL),
# so the tutorial needs no files. **The step counts are tiny, for CI**: it
# runs in well under a minute on two CPU cores.

# %%
import os
import pathlib
import shutil
import sys
import tempfile

import flax.linen as nn
import jax.numpy as jnp
import matplotlib

if "ipykernel" not in sys.modules:
  matplotlib.use("Agg")               # a plain script: write the PNGs, show nothing
import matplotlib.pyplot as plt

import luce.models
import luce.train

OUT = pathlib.Path(os.environ.get("LUCE_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="luce-tutorial-"))
WORK = OUT / "encoder"
shutil.rmtree(WORK, ignore_errors=True)
WORK.mkdir(parents=True)

# %% [markdown]
# ## The encoder
#
# The input is the batch every PL scorer gets: `item_features` float[B, n, f]
# (each item's history features, computed from earlier events only),
# `event_features` float[B, g] and `available` bool[B, n]. The output is
# float[B, n] scores, the Plackett-Luce log-weights; the family masks the
# unavailable items. This one is a Deep Sets encoder: each item is embedded on
# its own, the event's field is the mean embedding over its available items,
# and an item's score reads both, so an item is scored relative to whom it
# races against.

# %%
class DeepSetsScorer(nn.Module):
  """Per-item embedding plus the mean over the event's available items."""
  hidden: int = 32

  @nn.compact
  def __call__(self, batch, *, deterministic: bool = True):
    del deterministic                 # no dropout here
    item = jnp.asarray(batch["item_features"], jnp.float32)                # [B, n, f]
    event = jnp.asarray(batch["event_features"], jnp.float32)              # [B, g]
    weight = jnp.asarray(batch["available"], jnp.float32)[..., None]       # [B, n, 1]
    phi = nn.gelu(nn.Dense(self.hidden)(item))                             # [B, n, H]
    field = jnp.sum(phi * weight, axis=1) / jnp.maximum(jnp.sum(weight, axis=1), 1.0)
    context = jnp.concatenate([field, event], axis=-1)                      # [B, H + g]
    context = jnp.broadcast_to(context[:, None], phi.shape[:2] + context.shape[-1:])
    x = nn.gelu(nn.Dense(self.hidden)(jnp.concatenate([phi, context], axis=-1)))
    return nn.Dense(1, use_bias=False)(x)[..., 0]    # no bias: PL ignores a shared constant


# %% [markdown]
# ## The family and its registration
#
# `luce.models.PLFamily` is the neural PL family: its loss and NLL are the
# exact PL likelihood, its samples Gumbel-top-k lists. A subclass that swaps
# the module keeps all of that. Registering it is one entry in
# `luce.train.FAMILIES`, the table that turns `model.family` into an object.

# %%
class DeepSetsFamily(luce.models.PLFamily):
  """PLFamily with the Deep Sets scorer; the config's model.hidden sets its width."""
  name = "deepsets"

  def __init__(self, model_config, **kwargs):
    super().__init__(model_config, **kwargs)
    self.model = DeepSetsScorer(hidden=model_config.hidden)


luce.train.FAMILIES["deepsets"] = DeepSetsFamily
print(sorted(luce.train.FAMILIES))

# %% [markdown]
# ## Training it beside the built-in MLP
#
# The same config trains either model; only `model.family` differs.

# %%
def config(family: str):
  c = luce.train.base_config()
  c.data.source = "synthetic:ranking?n_items=20&k=5&n_events=600&seed=0"
  c.data.eval_k = 5
  c.model.update(family=family, hidden=32, depth=1)
  c.train.update(batch_size=32, num_steps=150, eval_every=50, checkpoint_every=50, progress_bar=False)
  c.baselines.names = ("uniform", "frequency", "static")
  return c


results = {family: luce.train.train_and_evaluate(config(family), str(WORK / family))
           for family in ("deepsets", "pl")}

# %%
valid = {f: r["valid"] for f, r in results.items()}
rows = {"deepsets": valid["deepsets"]["model"], "mlp (pl)": valid["pl"]["model"]}
rows.update({name: valid["pl"][name] for name in ("oracle", "static", "frequency", "uniform")})
for name, m in rows.items():
  print(f"{name:10s} NLL {m['nll_per_event']:.4f}  hits@5 {m['hits_at_k']:.3f}")

fig, ax = plt.subplots(figsize=(6.5, 3))
names = list(rows)
ax.barh(range(len(names)), [rows[n]["nll_per_event"] for n in names])
ax.set_yticks(range(len(names)), names)
lo = min(rows[n]["nll_per_event"] for n in names)
ax.set_xlim(lo - 0.5, max(rows[n]["nll_per_event"] for n in names) + 0.2)
ax.set_xlabel("validation NLL (nats per event), lower is better")
ax.set_title("A custom encoder beside the MLP (tiny CI run)")
fig.tight_layout()
fig.savefig(OUT / "custom_encoder_nll.png", dpi=100)
plt.show()
print("wrote", OUT / "custom_encoder_nll.png")

# %% [markdown]
# The oracle is the generating model's own NLL, the floor any model can reach
# on these events. To use the family from the command line, put the class
# and the `FAMILIES` entry in a module that the launcher imports before it
# builds the model (e.g. a config file that imports it), then pass
# `--config.model.family=deepsets`. A new *built-in* encoder instead goes
# into `luce.models.PLScorer` and `ENCODERS`, with its fields in
# `luce.train.base_config()` (see WORKSPACE.md, "Adding a model").
