"""Is the model better than a baseline? Paired block bootstrap and Diebold-Mariano.

Both read per-event loss differences d_t = loss_baseline_t - loss_model_t
(positive: the model is better on event t) in time order. Consecutive events
are not independent (a driver in form stays in form), so the bootstrap resamples
blocks of consecutive events and the DM variance is a Newey-West long-run
variance with the same lag. Everything is vectorised numpy over leading axes,
so many series (seeds, baselines) are tested at once.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from luce.errors import InputError


def default_block(n: int) -> int:
  """Block length n^(1/3), rounded, at least 1 (the usual rate for the mean)."""
  return max(1, int(round(n ** (1.0 / 3.0))))


def _checked(d, block: int | None) -> tuple[np.ndarray, int]:
  d = np.asarray(d, np.float64)
  if d.ndim < 1 or d.shape[-1] < 2:
    raise InputError(f"loss differences of shape {d.shape}: need at least 2 events on the last axis.")
  if not np.all(np.isfinite(d)):
    bad = int(np.flatnonzero(~np.isfinite(d.reshape(-1, d.shape[-1])).any(axis=0))[0])
    raise InputError(f"loss differences are not finite (first at event {bad}); score every event "
                     f"with finite losses before testing.")
  n = d.shape[-1]
  block = default_block(n) if block in (None, 0) else int(block)
  if not 1 <= block <= n:
    raise InputError(f"block={block} must be in [1, {n}] (the number of events).")
  return d, block


def block_bootstrap_means(d, *, block: int | None = None, samples: int = 2000, seed: int = 0) -> np.ndarray:
  """float64[..., samples]: means of circular block-bootstrap resamples of d.

  Each resample joins ceil(n / block) blocks of `block` consecutive events
  (wrapping around the end) starting at uniform positions, and keeps the
  first n events. Block sums come from a cumulative sum, so the cost is
  O(samples * n / block) per series.

  Args:
    d: float[..., n] series (time on the last axis).
    block: block length (None or 0: `default_block(n)`).
    samples: number of resamples.
    seed: the resampling seed; the same positions are used for every series
      of the batch (paired).
  """
  d, block = _checked(d, block)
  n = d.shape[-1]
  n_blocks = -(-n // block)
  rng = np.random.default_rng(seed)
  starts = rng.integers(0, n, size=(samples, n_blocks))
  wrapped = np.concatenate([d, d[..., :block]], axis=-1)
  csum = np.concatenate([np.zeros(d.shape[:-1] + (1,)), np.cumsum(wrapped, axis=-1)], axis=-1)
  sums = csum[..., starts + block] - csum[..., starts]       # [..., samples, n_blocks]
  # The last block is cut to n - (n_blocks - 1) * block events.
  tail = n - (n_blocks - 1) * block
  last = starts[:, -1]
  sums[..., -1] = csum[..., last + tail] - csum[..., last]
  return sums.sum(axis=-1) / n


def diebold_mariano(d, *, lag: int | None = None) -> dict[str, np.ndarray]:
  """Diebold-Mariano test of mean(d) = 0, two-sided.

  DM = mean(d) / sqrt(LRV / n), LRV the Newey-West (Bartlett) long-run
  variance with `lag` autocovariances (None: `default_block(n) - 1`); the
  Harvey-Leybourne-Newbold correction for one-step forecasts,
  sqrt((n - 1) / n), and Student t with n - 1 degrees of freedom.

  Returns {"statistic": float64[...], "p_value": float64[...]}.
  """
  d, block = _checked(d, None if lag is None else lag + 1)
  n = d.shape[-1]
  lag = block - 1
  x = d - d.mean(axis=-1, keepdims=True)
  lrv = (x * x).mean(axis=-1)
  for j in range(1, lag + 1):
    lrv = lrv + 2.0 * (1.0 - j / (lag + 1)) * (x[..., j:] * x[..., :-j]).sum(axis=-1) / n
  lrv = np.maximum(lrv, 1e-300)
  stat = d.mean(axis=-1) / np.sqrt(lrv / n) * np.sqrt((n - 1) / n)
  p = 2.0 * stats.t.sf(np.abs(stat), df=n - 1)
  return {"statistic": stat, "p_value": p}


def compare(d, *, block: int | None = None, samples: int = 2000, level: float = 0.95,
            seed: int = 0) -> dict:
  """Skill of the model over one baseline from d = loss_baseline - loss_model.

  Args:
    d: float[n] per-event loss differences in time order (or float[..., n]).

  Returns:
    {"mean", "ci_low", "ci_high" (percentile block-bootstrap interval at
    `level`), "p_value" (Diebold-Mariano, two-sided), "dm_statistic",
    "block", "events", "significant" (CI excludes 0 and p < 1 - level)};
    floats for a 1-D d, arrays otherwise.
  """
  if not 0.5 < level < 1:
    raise InputError(f"level={level} must be in (0.5, 1), e.g. 0.95.")
  d, block = _checked(d, block)
  means = block_bootstrap_means(d, block=block, samples=samples, seed=seed)
  alpha = 1.0 - level
  low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2], axis=-1)
  dm = diebold_mariano(d, lag=block - 1)
  mean = d.mean(axis=-1)
  significant = ((low > 0) | (high < 0)) & (dm["p_value"] < alpha)
  out = {"mean": mean, "ci_low": low, "ci_high": high, "p_value": dm["p_value"],
         "dm_statistic": dm["statistic"], "significant": significant}
  if d.ndim == 1:
    out = {k: (bool(v) if k == "significant" else float(v)) for k, v in out.items()}
  out.update(block=block, events=int(d.shape[-1]))
  return out


def verdict(model: str, baseline: str, result: dict, *, unit: str = "nats per event",
            level: float = 0.95) -> str:
  """One sentence: does `model` have significant skill over `baseline`?"""
  ci = f"{result['mean']:+.4f} {unit}, {level:.0%} CI [{result['ci_low']:+.4f}, {result['ci_high']:+.4f}], DM p = {result['p_value']:.3g}"
  if result["significant"] and result["mean"] > 0:
    return f"{model} has significant skill over {baseline} ({ci})."
  if result["significant"] and result["mean"] < 0:
    return f"{model} is significantly worse than {baseline} ({ci})."
  return f"no significant difference between {model} and {baseline} ({ci}): no evidence of skill."
