"""Ensembles: M member models whose event probabilities are averaged.

`model.ensemble.members` lists the members as model-field overrides, one
string each ("encoder=s5", "family=diffusion, depth=1", "" for the config's
own model); `model.ensemble.seeds` repeats each of them with that many
different initialisations (members x seeds models; with no members listed,
seeds copies of the config's model). The ensemble is the mixture

    P(event) = sum_m w_m P_m(event),   NLL = -log sum_m w_m exp(-NLL_m),

computed with logsumexp over the members' own NLLs (exact when every member's
is exact; when one is a bound, -log sum w exp(-bound_m) bounds the mixture's
NLL from above, so the ensemble reports "bound"). Samples come from the
mixture: each draw picks member m with probability w_m, then samples it. Its
scores are log P(item first) under the mixture.

The weights (`model.ensemble.weights`): "equal", w_m = 1/M; or "stacked",
the weights that maximise the mixture likelihood of events the members did
not train on (`stack_weights`, EM on their per-event NLLs): in a walk-forward
backtest fold f uses the weights fitted on the out-of-sample predictions of
folds 0..f-1 (fold 0: equal), so no weight has seen the event it scores; in
luce-train, luce-eval and luce-predict the weights are fitted on the
validation split (the validation NLL of a stacked ensemble is therefore
in-sample for its M - 1 weights; the test split's is not). An equal-weight
mixture of a strong and a weak member pays up to log 2 nats against the
strong one; stacking lets the weights follow the evidence.

Training fits the members side by side in one step: the objective is the
mean of their own losses, so each member learns as it would alone (its
gradient scaled by 1/M, which Adam undoes), not the mixture likelihood,
which lets one member take over. They see the same batches; their
initialisations and dropout noise differ (Flax derives each member's keys
from its name). Gradient clipping (`optimizer.clip_norm`) acts on the global
norm over all members.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from scipy.special import logsumexp

from luce.errors import ConfigError
from luce.models import inclusion_counts

_SEPARATOR = "/"


def parse_member(spec: str, model_config) -> dict:
  """{field: value} of one member spec "field=value, field=value" over `model_config`'s fields.

  Values are read as the field's type (int, float, bool or str); ensemble
  fields cannot be set per member.
  """
  out = {}
  for part in (p.strip() for p in str(spec).split(",")):
    if not part:
      continue
    if "=" not in part:
      raise ConfigError(f"model.ensemble.members entry {spec!r}: {part!r} is not field=value "
                        f"(e.g. 'encoder=s5, depth=1').")
    name, value = (s.strip() for s in part.split("=", 1))
    if name == "ensemble" or name.startswith("ensemble."):
      raise ConfigError(f"model.ensemble.members entry {spec!r}: a member cannot set {name!r}.")
    if name not in model_config:
      import difflib
      close = difflib.get_close_matches(name, list(model_config), n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ConfigError(f"model.ensemble.members entry {spec!r}: model.{name} does not exist.{hint}")
    default = model_config[name]
    try:
      if isinstance(default, bool):
        if value.lower() not in ("true", "false"):
          raise ValueError("not true or false")
        parsed = value.lower() == "true"
      elif isinstance(default, int):
        parsed = int(value)
      elif isinstance(default, float):
        parsed = float(value)
      else:
        parsed = value.strip("'\"")
    except ValueError as e:
      raise ConfigError(f"model.ensemble.members entry {spec!r}: model.{name}={value!r} is not a "
                        f"{type(default).__name__} ({e}).") from None
    out[name] = parsed
  return out


def member_model_configs(model_config) -> list:
  """The model section of each member (members x seeds of them); [] when it is no ensemble."""
  e = model_config.ensemble
  specs = list(e.members) or ([""] if e.seeds > 1 else [])
  out = []
  for spec in specs:
    overrides = parse_member(spec, model_config)
    for _ in range(e.seeds):
      member = copy.deepcopy(model_config)
      member.unlock()
      for name, value in overrides.items():
        member[name] = value
      member.ensemble.members, member.ensemble.seeds = (), 1
      out.append(member)
  return out


class EnsembleModel(nn.Module):
  """The members' Flax modules side by side: a tuple of their outputs, member m
  reading the keys of the batch prefixed "m/" (its own layout)."""
  members: Sequence[nn.Module]

  @nn.compact
  def __call__(self, batch, *, deterministic: bool = True):
    return tuple(member(_member_batch(batch, m), deterministic=deterministic)
                 for m, member in enumerate(self.members))


def _member_batch(batch: dict, m: int) -> dict:
  prefix = f"{m}{_SEPARATOR}"
  return {key[len(prefix):]: value for key, value in batch.items() if key.startswith(prefix)}


def _member_params(params: dict, m: int) -> dict:
  return params[f"members_{m}"]


class EnsembleFamily:
  """The family object of an ensemble (see `luce.models.PLFamily` for the interface)."""
  name = "ensemble"
  scores_meaning = "log P(item ranked or picked first) under the equal-weight mixture of the members"

  def __init__(self, members: Sequence, *, n_items: int, kind: str, k: int,
               weights: str = "equal"):
    if len(members) < 2:
      raise ConfigError("an ensemble needs at least 2 members (model.ensemble.members x seeds).")
    if weights not in ("equal", "stacked"):
      raise ConfigError(f"model.ensemble.weights={weights!r} must be 'equal' or 'stacked'.")
    self.members, self.n_items, self.kind, self.k = list(members), n_items, kind, k
    self.nll_kind = "exact" if all(m.nll_kind == "exact" for m in self.members) else "bound"
    self.model = EnsembleModel(tuple(m.model for m in self.members))
    self.stacked = weights == "stacked"
    self.weights = np.full(len(self.members), 1.0 / len(self.members))

  def set_weights(self, weights) -> None:
    """Use these mixture weights (float[M], >= 0, summing to 1) from now on."""
    w = np.asarray(weights, np.float64)
    if w.shape != (len(self.members),) or not np.all(np.isfinite(w) & (w >= 0)) \
        or abs(w.sum() - 1.0) > 1e-9:
      raise ConfigError(f"ensemble weights must be {len(self.members)} numbers >= 0 summing to 1, "
                        f"got {w.tolist()}.")
    self.weights = w

  def mixture(self, member_nll) -> np.ndarray:
    """float64[m]: the mixture NLL of float[M, m] member NLLs under the current weights."""
    return mixture_nll(member_nll, self.weights)

  def take(self, arrays: dict, rows) -> dict:
    """Each member's batch under its index prefix, plus the events' weights (the step reads them)."""
    out = {"weights": arrays["weights"][np.asarray(rows)]}
    for m, member in enumerate(self.members):
      for key, value in member.take(arrays, rows).items():
        out[f"{m}{_SEPARATOR}{key}"] = value
    return out

  def loss(self, outputs, batch):
    """float32[B]: the mean of the members' own losses."""
    losses = [member.loss(out, _member_batch(batch, m))
              for m, (member, out) in enumerate(zip(self.members, outputs))]
    return sum(losses) / len(losses)

  def member_nll(self, params, arrays, batch_size: int = 1024) -> np.ndarray:
    """float64[M, m]: each member's own per-event NLL."""
    return np.stack([member.nll(_member_params(params, m), arrays, batch_size)
                     for m, member in enumerate(self.members)])

  def nll(self, params, arrays, batch_size: int = 1024) -> np.ndarray:
    """float64[m]: -log sum_m w_m exp(-NLL_m), by logsumexp (inf only when every member
    with weight > 0 gives inf)."""
    return self.mixture(self.member_nll(params, arrays, batch_size))

  def scores(self, params, arrays, batch_size: int = 1024) -> np.ndarray:
    """float32[m, n]: log of the mixture's P(item first); -inf for unavailable items."""
    logs = []
    for m, member in enumerate(self.members):
      s = np.asarray(member.scores(_member_params(params, m), arrays, batch_size), np.float64)
      s = np.where(np.asarray(arrays["available"]), s, -np.inf)
      logs.append(s - logsumexp(s, axis=1, keepdims=True))
    with np.errstate(divide="ignore"):
      log_w = np.log(self.weights)[:, None, None]
    out = logsumexp(np.stack(logs) + log_w, axis=0)
    return out.astype(np.float32)

  def sample(self, params, arrays, key, samples: int, k: int, batch_size: int | None = None) -> np.ndarray:
    """int32[m, samples, k]: draws from the mixture (member m chosen with probability w_m
    per draw)."""
    m = len(arrays["items"])
    pick_key, *keys = jax.random.split(key, len(self.members) + 1)
    if np.allclose(self.weights, self.weights[0]):  # equal weights: the uniform pick
      pick = np.asarray(jax.random.randint(pick_key, (m, samples), 0, len(self.members)))
    else:
      with np.errstate(divide="ignore"):
        log_w = np.log(self.weights)
      pick = np.asarray(jax.random.categorical(pick_key, log_w, shape=(m, samples)))
    out = np.full((m, samples, k), -1, np.int32)
    for j, member in enumerate(self.members):
      need = int((pick == j).sum(axis=1).max(initial=0))
      if need == 0:
        continue
      extra = {} if batch_size is None else {"batch_size": batch_size}
      drawn = np.asarray(member.sample(_member_params(params, j), arrays, keys[j], need, k, **extra))
      # The r-th draw of member j for an event fills that event's r-th slot picking j.
      rank = np.cumsum(pick == j, axis=1) - 1
      rows, cols = np.nonzero(pick == j)
      out[rows, cols] = drawn[rows, rank[rows, cols]]
    return out

  def inclusion(self, params, arrays, key, draws: int, k: int, batch_size: int | None = None) -> np.ndarray:
    return inclusion_counts(self.sample(params, arrays, key, draws, k, batch_size), self.n_items)


def mixture_nll(member_nll: np.ndarray, weights=None) -> np.ndarray:
  """float64[m]: -log(sum_m w_m exp(-nll[m])) over axis 0 of float[M, m], stably
  (weights None: w_m = 1/M)."""
  member_nll = np.asarray(member_nll, np.float64)
  if weights is None:
    return -(logsumexp(-member_nll, axis=0) - math.log(member_nll.shape[0]))
  w = np.asarray(weights, np.float64)[:, None]
  keep = np.broadcast_to(w > 0, member_nll.shape)
  with np.errstate(divide="ignore"):
    terms = np.where(keep, np.log(np.where(w > 0, w, 1.0)) - member_nll, -np.inf)
  return -logsumexp(terms, axis=0)


def stack_weights(member_nll, event_weights=None, *, tol: float = 1e-12,
                  max_iter: int = 10_000) -> np.ndarray:
  """float64[M]: the mixture weights maximising sum_e c_e log sum_m w_m exp(-nll[m, e]).

  The objective is concave in w on the simplex; EM (w_m <- mean_e of member
  m's responsibility, events weighted by c_e) climbs it monotonically from
  equal weights and stops when no weight moves by more than `tol`. Events
  where every member gives an infinite NLL carry no information and are left
  out; with no event left the weights stay equal.

  Args:
    member_nll: float[M, m], each member's per-event NLL (out-of-sample ones:
      the walk-forward's earlier folds, or a validation split).
    event_weights: float[m] or None, the events' weights (>= 0).
  """
  nll = np.asarray(member_nll, np.float64)
  if nll.ndim != 2 or nll.shape[0] < 1:
    raise ConfigError(f"stack_weights needs float[M, m] member NLLs, got shape {nll.shape}.")
  n_members = nll.shape[0]
  c = np.ones(nll.shape[1]) if event_weights is None else np.asarray(event_weights, np.float64)
  usable = np.isfinite(nll).any(axis=0) & (c > 0)
  w = np.full(n_members, 1.0 / n_members)
  if not usable.any():
    return w
  log_lik, c = -nll[:, usable], c[usable]
  for _ in range(max_iter):
    with np.errstate(divide="ignore"):
      joint = np.log(np.where(w > 0, w, 1.0))[:, None] + np.where(w[:, None] > 0, log_lik, -np.inf)
    resp = np.exp(joint - logsumexp(joint, axis=0, keepdims=True))
    new = resp @ c / c.sum()
    if np.max(np.abs(new - w)) < tol:
      return new / new.sum()
    w = new
  return w / w.sum()


def fit_stacked_weights(family, params, prepared, batch_size: int):
  """Fit a stacked ensemble's weights on the validation split; return that split's
  member NLLs (float64[M, m]), or None when `family` is no stacked ensemble."""
  if not getattr(family, "stacked", False):
    return None
  valid = prepared.split_arrays("valid")
  if len(valid["items"]) == 0:
    raise ConfigError("model.ensemble.weights='stacked' fits the weights on the validation "
                      "split, which is empty here: give data.split a validation share or "
                      "data.valid_from a date.")
  member_nll = family.member_nll(params, valid, batch_size)
  family.set_weights(stack_weights(member_nll, valid["weights"]))
  return member_nll
