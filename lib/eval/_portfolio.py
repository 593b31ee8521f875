"""Portfolio backtest of asset rankings: long the predicted top k (and long-short).

Day t's weights are chosen from day t's scores (made before day t) and earn
day t's returns. Accounting, per day t:

  drifted   w̃_t = w_{t-1} (1 + r_{t-1}) / (1 + Σ_i w_{t-1,i} r_{t-1,i})   (w̃_0 = 0)
  turnover  τ_t = Σ_i |w_t,i - w̃_t,i|        (the first day buys the whole book)
  return    R_t = Σ_i w_t,i r_t,i - (bps / 10^4) τ_t

so a cost of c bps is paid on every unit of value traded. Returns are simple
(not log); NaN returns (asset not trading) count as 0 and such assets are not
held.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from luce.errors import InputError, ShapeError

PERIODS_PER_YEAR = 252


def top_k_weights(scores, available, k: int, *, long_short: bool = False) -> np.ndarray:
  """float64[T, n]: 1/k on each day's k best-scored available assets (and, long-short,
  -1/k on the k worst). Ties go to the lower asset index."""
  s = np.where(available, np.asarray(scores, np.float64), -np.inf)
  T, n = s.shape
  if not 1 <= k <= n // (2 if long_short else 1):
    raise InputError(f"k={k} assets per side with {n} assets{' (long-short)' if long_short else ''}: "
                     f"need 1 <= k <= {n // (2 if long_short else 1)}.")
  w = np.zeros((T, n))
  order = np.argsort(-s, axis=1, kind="stable")
  rows = np.arange(T)[:, None]
  count = np.minimum(available.sum(axis=1), k)[:, None]
  top = order[:, :k]
  w[rows, top] = np.where(np.arange(k)[None, :] < count, 1.0 / np.maximum(count, 1), 0.0)
  if long_short:
    low = np.argsort(np.where(available, np.asarray(scores, np.float64), np.inf), axis=1, kind="stable")[:, :k]
    w[rows, low] -= np.where(np.arange(k)[None, :] < count, 1.0 / np.maximum(count, 1), 0.0)
  return w


def equal_weights(available) -> np.ndarray:
  """float64[T, n]: 1 / (number available) on every available asset."""
  a = np.asarray(available, np.float64)
  return a / np.maximum(a.sum(axis=1, keepdims=True), 1.0)


def run_weights(weights, returns, *, cost_bps: float) -> dict[str, np.ndarray]:
  """Daily accounting of target weights (see the module docstring).

  Args:
    weights: float[T, n] target weights of each day.
    returns: float[T, n] simple returns of each day (NaN: not traded).
    cost_bps: cost in basis points per unit of value traded.

  Returns:
    {"returns": float64[T] net, "gross": float64[T], "turnover": float64[T],
     "costs": float64[T]}.
  """
  w = np.asarray(weights, np.float64)
  r = np.nan_to_num(np.asarray(returns, np.float64), nan=0.0)
  if w.shape != r.shape or w.ndim != 2:
    raise ShapeError(f"weights {w.shape} and returns {r.shape} must both be [days, assets].")
  if cost_bps < 0:
    raise InputError(f"cost_bps={cost_bps} must be >= 0.")
  gross = (w * r).sum(axis=1)
  drifted = np.zeros_like(w)
  grown = w[:-1] * (1.0 + r[:-1])
  drifted[1:] = grown / np.maximum(1.0 + gross[:-1], 1e-12)[:, None]
  turnover = np.abs(w - drifted).sum(axis=1)
  costs = cost_bps * 1e-4 * turnover
  return {"returns": gross - costs, "gross": gross, "turnover": turnover, "costs": costs}


def sharpe(returns, axis: int = -1) -> np.ndarray:
  """Annualised Sharpe ratio (risk-free 0): mean / std * sqrt(252); 0 when std is 0."""
  r = np.asarray(returns, np.float64)
  sd = r.std(axis=axis, ddof=1)
  return np.where(sd > 0, r.mean(axis=axis) / np.where(sd > 0, sd, 1.0) * np.sqrt(PERIODS_PER_YEAR), 0.0)


def summary(result: dict) -> dict[str, float]:
  """Annualised return and volatility, Sharpe, max drawdown (of the wealth
  curve Π(1 + R_t), as a positive fraction), win rate (days with R_t > 0),
  mean daily turnover, total return, total costs."""
  r = result["returns"]
  wealth = np.cumprod(1.0 + r)
  peak = np.maximum.accumulate(np.concatenate([[1.0], wealth]))[1:]
  return {
      "annual_return": float((wealth[-1] ** (PERIODS_PER_YEAR / len(r))) - 1.0),
      "annual_volatility": float(r.std(ddof=1) * np.sqrt(PERIODS_PER_YEAR)),
      "sharpe": float(sharpe(r)),
      "max_drawdown": float(np.max(1.0 - wealth / peak)),
      "win_rate": float(np.mean(r > 0)),
      "turnover": float(np.mean(result["turnover"])),
      "total_return": float(wealth[-1] - 1.0),
      "total_costs": float(np.sum(result["costs"])),
      "days": int(len(r)),
  }


def sharpe_difference(a, b, *, block: int | None = None, samples: int = 2000, level: float = 0.95,
                      seed: int = 0) -> dict[str, float]:
  """Sharpe(a) - Sharpe(b) of two daily return series on the same days, with a
  paired circular block-bootstrap percentile interval (same resampled days for both)."""
  from luce.eval._significance import default_block
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  n = len(a)
  block = default_block(n) if not block else block
  rng = np.random.default_rng(seed)
  n_blocks = -(-n // block)
  starts = rng.integers(0, n, size=(samples, n_blocks))
  idx = ((starts[:, :, None] + np.arange(block)) % n).reshape(samples, -1)[:, :n]
  diffs = sharpe(a[idx]) - sharpe(b[idx])
  alpha = 1.0 - level
  low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
  return {"mean": float(sharpe(a) - sharpe(b)), "ci_low": float(low), "ci_high": float(high),
          "block": int(block)}


def tradable_before(returns, past_returns=None) -> np.ndarray:
  """bool[T, n]: the assets whose price is known when day t's portfolio is set.

  A finite return on day t - 1 means a price at the close before day t; day
  0 reads the last row of `past_returns` (all False without it). Day t's own
  return (or whether it exists: a delisting) is not known then.
  """
  r = np.asarray(returns, np.float64)
  before = np.zeros(r.shape, bool)
  before[1:] = np.isfinite(r[:-1])
  if past_returns is not None and len(past_returns):
    before[0] = np.isfinite(np.asarray(past_returns, np.float64)[-1])
  return before


def backtest(scores, returns, available, *, k: int, cost_bps: float, long_short: bool = True,
             samples: int = 2000, seed: int = 0) -> dict:
  """Top-k (and long-short) portfolios of the scores against equal weight.

  Args:
    scores: float[T, n] each day's scores, made before the day (-inf: not scored;
      such an asset is picked only when fewer than k others can be).
    returns: float[T, n] each day's simple returns. NaN: no price that day; an
      asset held into such a day earns 0 on it (the day's outcome is not used
      to decide what to hold).
    available: bool[T, n] assets that can be held on day t, known when the
      portfolio is set (`tradable_before`), never from day t's own prices.

  Returns:
    {"k", "cost_bps", "sharpe", "max_drawdown", "turnover", ... (summary of the
     long top-k), "equal_weight": {...}, "long_short": {...},
     "sharpe_diff": {"mean", "ci_low", "ci_high"} (long top-k minus equal weight),
     "series": {"long": R[T], "equal_weight": R[T], "long_short": R[T]}}.
  """
  available = np.asarray(available, bool)
  long = run_weights(top_k_weights(scores, available, k), returns, cost_bps=cost_bps)
  equal = run_weights(equal_weights(available), returns, cost_bps=cost_bps)
  out = {"k": int(k), "cost_bps": float(cost_bps), **summary(long), "equal_weight": summary(equal),
         "sharpe_diff": sharpe_difference(long["returns"], equal["returns"], samples=samples, seed=seed)}
  series = {"long": long["returns"], "equal_weight": equal["returns"]}
  if long_short:
    ls = run_weights(top_k_weights(scores, available, k, long_short=True), returns, cost_bps=cost_bps)
    out["long_short"] = summary(ls)
    series["long_short"] = ls["returns"]
  out["series"] = series
  return out


def extremes(scores, returns, available, *, k: int, past_returns=None, window: int = 20) -> dict:
  """Where a ranking's skill sits: at the top of the day, at both ends, or nowhere.

  A model can beat uniform on the likelihood of the day's top k by picking the
  assets that move most (the top k of a day are mostly large movers) without
  knowing which way they move; a long-only top-k portfolio earns nothing from
  that. This counts, per day t, how many of the k best-scored assets land in
  the day's k best returns and how many in its k worst, against chance
  k²/n_t, and rank-correlates the scores with trailing volatility (the standard
  deviation of each asset's returns over the `window` days before t, from
  `past_returns` and earlier rows of `returns`; never day t itself).

  Args:
    scores: float[T, n] each day's scores, made before the day.
    returns: float[T, n] each day's simple returns (NaN: not traded).
    available: bool[T, n] assets that can be held that day.
    k: assets per end, 1 <= k <= n // 2.
    past_returns: optional float[P, n] returns of the days before day 0.
    window: trailing days of the volatility, >= 2.

  Returns:
    {"k", "window", "days", "top" and "bottom": {"mean", "se"} overlaps per day,
     "chance": mean k²/n_t, "vol_corr": mean Spearman correlation of scores and
     trailing volatility over the days with at least `window` past days (None
     when there are none), "vol_days"}.
  """
  s = np.asarray(scores, np.float64)
  r = np.asarray(returns, np.float64)
  if s.shape != r.shape or np.shape(available) != s.shape:
    raise ShapeError(f"scores {s.shape}, returns {r.shape} and available {np.shape(available)} "
                     f"must have one shape [T, n].")
  T, n = s.shape
  if not 1 <= k <= n // 2:
    raise InputError(f"k={k}: need 1 <= k <= n // 2 = {n // 2} for the top and bottom k.")
  if window < 2:
    raise InputError(f"window={window} must be >= 2.")
  past = np.zeros((0, n)) if past_returns is None else np.asarray(past_returns, np.float64)
  if past.ndim != 2 or past.shape[1] != n:
    raise ShapeError(f"past_returns must be float[P, {n}], got shape {past.shape}.")
  ok = np.asarray(available, bool) & np.isfinite(r) & np.isfinite(s)
  count = ok.sum(axis=1)
  days = count >= 2 * k
  picked = np.argsort(np.where(ok, -s, np.inf), axis=1, kind="stable")[:, :k]
  best = np.argsort(np.where(ok, -r, np.inf), axis=1, kind="stable")[:, :k]
  worst = np.argsort(np.where(ok, r, np.inf), axis=1, kind="stable")[:, :k]
  rows = np.arange(T)[:, None]

  def overlap(target):
    hit = np.zeros((T, n), bool)
    hit[rows, target] = True
    return hit[rows, picked].sum(axis=1).astype(np.float64)

  chance = np.where(days, k * k / np.maximum(count, 1), np.nan)
  out = {"k": int(k), "window": int(window), "days": int(days.sum()),
         "chance": float(np.nanmean(chance)) if days.any() else None}
  for name, target in (("top", best), ("bottom", worst)):
    hits = overlap(target)[days]
    out[name] = {"mean": float(hits.mean()) if hits.size else None,
                 "se": float((hits - chance[days]).std(ddof=1) / np.sqrt(hits.size))
                 if hits.size > 1 else None}

  history = np.concatenate([past, r])
  offset = len(past)
  corrs = []
  for t in range(T):
    lo = offset + t - window
    if lo < 0 or not days[t]:
      continue
    trail = history[lo:offset + t]
    full = np.isfinite(trail).all(axis=0) & ok[t]
    if full.sum() < 3:
      continue
    vol = trail[:, full].std(axis=0, ddof=1)
    a, b = stats.rankdata(s[t, full]), stats.rankdata(vol)  # average ranks
    if a.std() > 0 and b.std() > 0:
      corrs.append(float(np.corrcoef(a, b)[0, 1]))
  out["vol_corr"] = float(np.mean(corrs)) if corrs else None
  out["vol_days"] = len(corrs)
  return out


def describe_extremes(e: dict) -> str:
  """One paragraph, in words, of `extremes`' result."""
  k, c = e["k"], e["chance"]
  if c is None or e["top"]["mean"] is None:
    return f"No day had {2 * k} tradable assets: the top and bottom {k} cannot be compared."
  top, bottom = e["top"], e["bottom"]
  text = (f"Where the ranking's skill sits: the model's top {k} landed in the day's best {k} returns "
          f"{top['mean']:.3f} times a day and in its worst {k} {bottom['mean']:.3f} times (chance "
          f"{c:.3f} each, over {e['days']} days).")
  if e["vol_corr"] is not None:
    text += (f" Its scores rank trailing {e['window']}-day volatility with a mean Spearman "
             f"correlation of {e['vol_corr']:+.2f}.")

  def above(x):  # more than two standard errors above chance
    return x["se"] is not None and x["mean"] - c > 2 * x["se"]

  def below(x):
    return x["se"] is not None and c - x["mean"] > 2 * x["se"]

  if below(top) and below(bottom):
    text += (f" Its top {k} are quiet assets that reach either end of the day less often than chance: "
             "whatever likelihood it gains comes from the order of the rest of the list, not from "
             "picking the day's winners, and a top-k book cannot profit from it.")
  elif above(top) and above(bottom):
    text += (" It picks assets that move a lot more than assets that go up: the likelihood of the "
             "day's top k rewards that, a long-only top-k book does not, so a positive NLL skill can "
             "sit beside a portfolio no better than equal weight.")
  elif above(top):
    text += " Its picks lean to the day's winners, not merely to large movers."
  elif above(bottom):
    text += " Its picks land among the day's losers more often than chance: the scores point the wrong way."
  else:
    text += " Neither end is hit more than two standard errors above chance."
  return text
