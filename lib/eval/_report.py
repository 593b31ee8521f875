"""Scoring a walk-forward backtest and writing its report (Markdown, HTML, PNG, JSON)."""

from __future__ import annotations

import html
import json
import math
import pathlib
import shlex
import sys

import jax
import numpy as np

from luce import metrics
from luce.eval import _portfolio, _significance

METRIC_NAMES = ("nll", "hits", "precision", "recall", "ndcg", "rr")


def asset_returns(table) -> np.ndarray | None:
  """float64[m, n] each event's asset returns (`ctx_returns` of prices tables), or None."""
  if "ctx_returns" not in table.events.column_names:
    return None
  column = table.events.column("ctx_returns").combine_chunks()
  flat = np.asarray(column.values.to_numpy(zero_copy_only=False), np.float64)
  return flat.reshape(len(table), -1)


def score_backtest(wf) -> dict:
  """Every number of the backtest (what metrics.json holds) plus per-event
  series for the plots under the key "_series" (dropped from the JSON).

  Returns {"source", "kind", "nll", "events", "start", "folds", "k",
  "models": name -> {nll, hits, precision, recall, ndcg, mrr, ece, brier},
  "skill": baseline -> {mean, ci_low, ci_high, p_value, dm_statistic,
  significant, block, events}, "verdicts": baseline -> sentence,
  "calibration": name -> curve, "portfolio" and "extremes" (asset rankings
  only; see luce.eval.extremes), "seconds"}.
  """
  c, b = wf.config, wf.config.backtest
  k = c.data.eval_k
  per_event, summary, calib = {}, {}, {}
  key = jax.random.key(c.seed)
  for name, s in wf.scores.items():
    per_event[name] = metrics.event_metrics(s, wf.items, wf.available, kind=wf.kind, k=k)
    if name in wf.nll:  # the model family's own NLL, not the PL one of its scores
      per_event[name]["nll"] = np.asarray(wf.nll[name], per_event[name]["nll"].dtype)
    calib[name] = metrics.calibration_of(s, wf.items, wf.available, kind=wf.kind, k=k, key=key,
                                          samples=b.calibration_samples, bins=b.calibration_bins,
                                          probs=wf.inclusion.get(name))
    row = {m: float(np.mean(v)) for m, v in per_event[name].items() if m != "rr"}
    row["mrr"] = float(np.mean(per_event[name]["rr"])) if wf.kind == "ranking" else None
    row.update(ece=calib[name]["ece"], brier=calib[name]["brier"])
    summary[name] = row
  skill, verdicts = {}, {}
  for name in wf.scores:
    if name == "model":
      continue
    d = per_event[name]["nll"] - per_event["model"]["nll"]
    skill[name] = _significance.compare(d, block=b.block or None, samples=b.bootstrap_samples,
                                        level=b.level, seed=c.seed)
    verdicts[name] = _significance.verdict("the model", name, skill[name], level=b.level)
  out = {
      "source": c.data.source, "kind": wf.kind, "family": c.model.family, "nll": wf.nll_kind,
      "unit": "nats per event",
      "events": int(len(wf.items)), "start": int(wf.start), "folds": len(wf.folds),
      "first_time": str(wf.times[0]), "last_time": str(wf.times[-1]),
      "window": b.window, "retrain_every": int(b.retrain_every), "k": int(k),
      "models": summary, "skill": skill, "verdicts": verdicts, "calibration": calib,
      "seconds": {name: round(v, 2) for name, v in wf.seconds.items()},
      "run": run_record(c, wf.prepared.data_hash),
      "_series": {"per_event": per_event},
  }
  importance = {}
  for group, values in wf.importance.items():
    stats = _significance.compare(np.asarray(values, np.float64), block=b.block or None,
                                  samples=b.bootstrap_samples, level=b.level, seed=c.seed)
    importance[group] = {key: stats[key] for key in ("mean", "ci_low", "ci_high", "p_value")}
  if importance:
    out["importance"] = importance
  unseen = _unseen_levels(wf)
  if unseen:
    out["unseen_levels"] = unseen
  returns = asset_returns(wf.prepared.table)
  if returns is not None:
    r = returns[wf.start:]
    # What can be held on day t is what had a price before it, not day t's own prices.
    tradable = _portfolio.tradable_before(r, returns[:wf.start])
    port = _portfolio.backtest(wf.scores["model"], r, tradable, k=b.portfolio_k,
                               cost_bps=b.cost_bps, long_short=True, samples=b.bootstrap_samples,
                               seed=c.seed)
    out["_series"]["portfolio"] = port.pop("series")
    out["portfolio"] = port
    n_assets = r.shape[1]
    if 2 * k <= n_assets:
      out["extremes"] = _portfolio.extremes(wf.scores["model"], r, wf.available, k=k,
                                            past_returns=returns[:wf.start])
  return out


def _unseen_levels(wf) -> dict:
  """covariate -> {"entries", "events"}: predicted entries whose categorical level
  (a constructor) had no entry in the group-history window before the event."""
  names = list(wf.prepared.item_names)
  features = wf.prepared.arrays["all"]["item_features"][wf.start:]
  out = {}
  for j, name in enumerate(names):
    if name.startswith("grp_") and name.endswith("_new"):
      new = (features[:, :, j] > 0.5) & wf.available
      out[name[4:-4]] = {"entries": int(new.sum()), "events": int(new.any(axis=1).sum())}
  return out


def _fmt(x, digits: int = 4) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return "–"
  return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _nll_words(result: dict) -> str:
  """Which likelihood each row's NLL is, in words."""
  if result.get("family") == "diffusion":
    model = ("exact for the diffusion model (subset recursion)" if result["nll"] == "exact" else
             "an upper bound (MD4 ELBO) for the diffusion model")
    return f"{model}, exact for the baselines (PL set likelihood)."
  return "exact: the PL likelihood."


def run_record(config, data_hash: str) -> dict:
  """What reproduces the run: luce version, seed, data hash, command line, config."""
  import luce
  return {"luce_version": luce.__version__, "seed": int(config.seed), "data_hash": data_hash,
          "command": shlex.join([pathlib.Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
          "config": json.loads(config.to_json())}


def _sections(result: dict) -> list:
  """The report as blocks: ("h1"|"h2"|"p", text), ("table", header, rows), ("img", file, alt)."""
  k = result["k"]
  blocks = [("h1", f"Walk-forward backtest: {result['source']}"),
            ("p", f"{result['events']} {result['kind']} events from {result['first_time']} to "
                  f"{result['last_time']}, each predicted by a model trained only on earlier events "
                  f"({result['window']} window, retrained every {result['retrain_every']} events, "
                  f"{result['folds']} folds). NLL in nats per event, "
                  + _nll_words(result))]
  run = result.get("run")
  if run:
    blocks.append(("p", f"luce {run['luce_version']}, seed {run['seed']}, data hash "
                        f"{run['data_hash'][:16]}..., command `{run['command']}`; the whole config "
                        f"is `run.config` in metrics.json."))
  blocks.append(("h2", "Verdict"))
  for text in result["verdicts"].values():
    blocks.append(("p", text[0].upper() + text[1:]))
  blocks.append(("h2", "Scores"))
  header = ["model", "NLL", f"hits@{k}", f"precision@{k}", f"recall@{k}", f"NDCG@{k}", "MRR",
            "ECE", "Brier"]
  rows = [[name, _fmt(r["nll"]), _fmt(r["hits"], 3), _fmt(r["precision"], 3), _fmt(r["recall"], 3),
           _fmt(r["ndcg"], 3), _fmt(r["mrr"], 3), _fmt(r["ece"], 4), _fmt(r["brier"], 4)]
          for name, r in result["models"].items()]
  blocks.append(("table", header, rows))
  blocks.append(("h2", "Skill: NLL of the baseline minus the model's (positive: the model is better)"))
  rows = [[name, _fmt(s["mean"]), f"[{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}]", f"{s['p_value']:.3g}",
           "yes" if s["significant"] else "no"] for name, s in result["skill"].items()]
  blocks.append(("table", ["baseline", "mean", "95% block-bootstrap CI", "DM p-value", "significant"], rows))
  blocks.append(("img", "nll_over_time.png", "NLL over time"))
  if "portfolio" in result:
    p = result["portfolio"]
    blocks.append(("h2", f"Portfolio: long the top {p['k']}, {p['cost_bps']:g} bps costs on turnover"))
    rows = []
    for name, s in (("long top-k", p), ("long-short", p.get("long_short")), ("equal weight", p["equal_weight"])):
      if s is None:
        continue
      rows.append([name, _fmt(s["annual_return"], 3), _fmt(s["annual_volatility"], 3), _fmt(s["sharpe"], 3),
                   _fmt(s["max_drawdown"], 3), _fmt(s["win_rate"], 3), _fmt(s["turnover"], 3)])
    blocks.append(("table", ["portfolio", "annual return", "volatility", "Sharpe", "max drawdown",
                             "win rate", "daily turnover"], rows))
    d = p["sharpe_diff"]
    blocks.append(("p", f"Sharpe of long top-{p['k']} minus equal weight: {d['mean']:+.3f}, 95% "
                        f"block-bootstrap CI [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
                        f" ({'significant' if d['ci_low'] > 0 or d['ci_high'] < 0 else 'not significant'})."))
    blocks.append(("img", "cumulative_returns.png", "cumulative returns"))
    if "extremes" in result:
      blocks.append(("p", _portfolio.describe_extremes(result["extremes"])))
  if result.get("importance"):
    blocks.append(("h2", "Permutation importance: what the model's skill rests on"))
    blocks.append(("p", "Increase of the model's NLL (nats per event) when one feature group is "
                        "shuffled across the events of each fold, the model unchanged; larger "
                        "means the model leans on it. 95% block-bootstrap intervals."))
    rows = [[group, _fmt(v["mean"]), f"[{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}]"]
            for group, v in sorted(result["importance"].items(), key=lambda kv: -kv[1]["mean"])]
    blocks.append(("table", ["feature group", "NLL increase", "95% CI"], rows))
    blocks.append(("img", "importance.png", "permutation importance"))
  for covariate, u in result.get("unseen_levels", {}).items():
    blocks.append(("p", f"Unseen levels of {covariate}: {u['entries']} predicted entries in "
                        f"{u['events']} events had a {covariate} with no entry in the group-history "
                        f"window before the event (the model sees them as new: "
                        f"grp_{covariate}_new = 1, group rates 0)."))
  blocks.append(("h2", "Calibration and hits"))
  draws = ("sets drawn from the diffusion model for the model, PL draws for the baselines"
           if result.get("family") == "diffusion" else "PL draws")
  blocks.append(("p", f"Calibration of P(item in the top {k}) (Monte Carlo over {draws}) against "
                      f"the observed top {k}; hits = |predicted top {k} ∩ observed top {k}|."))
  blocks.append(("img", "calibration.png", "calibration"))
  blocks.append(("img", "hits.png", "hit distribution"))
  return blocks


def _markdown(blocks) -> str:
  out = []
  for block in blocks:
    if block[0] == "h1":
      out.append(f"# {block[1]}\n")
    elif block[0] == "h2":
      out.append(f"## {block[1]}\n")
    elif block[0] == "p":
      out.append(block[1] + "\n")
    elif block[0] == "table":
      _, header, rows = block
      out.append("| " + " | ".join(header) + " |")
      out.append("|" + "---|" * len(header))
      out.extend("| " + " | ".join(r) + " |" for r in rows)
      out.append("")
    elif block[0] == "img":
      out.append(f"![{block[2]}]({block[1]})\n")
  return "\n".join(out)


def _html(blocks, title: str) -> str:
  e = html.escape
  out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
         "<style>body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}img{max-width:100%}</style>"
         "</head><body>"]
  for block in blocks:
    if block[0] in ("h1", "h2", "p"):
      out.append(f"<{block[0]}>{e(block[1])}</{block[0]}>")
    elif block[0] == "table":
      _, header, rows = block
      out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
      out.extend("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
      out.append("</table>")
    elif block[0] == "img":
      out.append(f"<p><img src='{e(block[1])}' alt='{e(block[2])}'></p>")
  out.append("</body></html>")
  return "\n".join(out)


def hit_distribution(hits, top: int) -> np.ndarray:
  """float64[top + 1]: the fraction of events with each hit count, an event's
  fractional (expected) hits split between the two nearest counts in proportion,
  so the distribution's mean is the mean of `hits` (rounding would move a
  constant scorer's k²/n to 0 or 1)."""
  h = np.clip(np.asarray(hits, np.float64), 0, top)
  low = np.floor(h).astype(int)
  up = np.minimum(low + 1, top)
  frac = h - low
  out = np.bincount(low, weights=1 - frac, minlength=top + 1)[:top + 1]
  out += np.bincount(up, weights=frac, minlength=top + 1)[:top + 1]
  return out / max(len(h), 1)


def _legend_outside(ax) -> None:
  """The legend right of the axes, off the data."""
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def _plots(result: dict, times, folder: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  per_event = result["_series"]["per_event"]
  x = np.asarray(times)
  window = max(5, len(x) // 25)

  fig, ax = plt.subplots(figsize=(8, 4))
  kernel = np.ones(window) / window
  for name, values in per_event.items():
    smooth = np.convolve(values["nll"], kernel, mode="valid")
    ax.plot(x[window - 1:], smooth, label=name, lw=2.0 if name == "model" else 1.0)
  ax.set_title(f"NLL per event (rolling mean over {window} events; lower is better)")
  ax.set_xlabel("event time")
  ax.set_ylabel("nats per event")
  _legend_outside(ax)
  fig.autofmt_xdate()
  fig.savefig(folder / "nll_over_time.png", dpi=110, bbox_inches="tight")
  plt.close(fig)

  if result.get("importance"):
    items = sorted(result["importance"].items(), key=lambda kv: kv[1]["mean"])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(items) + 1.2))
    means = np.array([v["mean"] for _, v in items])
    err = np.array([[v["mean"] - v["ci_low"], v["ci_high"] - v["mean"]] for _, v in items]).T
    ax.barh(np.arange(len(items)), means, xerr=err, color="#4c72b0", capsize=3)
    ax.set_yticks(np.arange(len(items)))
    ax.set_yticklabels([name for name, _ in items], fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("NLL increase when shuffled (nats per event)")
    ax.set_title("Permutation importance of each feature group")
    fig.tight_layout()
    fig.savefig(folder / "importance.png", dpi=110)
    plt.close(fig)

  fig, ax = plt.subplots(figsize=(5.5, 5))
  shown = []
  for name, c in result["calibration"].items():
    count = np.asarray(c["count"])
    keep = count >= 10  # a bin of a handful of entries is noise
    xs, ys = np.asarray(c["mean_predicted"])[keep], np.asarray(c["observed"])[keep]
    shown += [xs, ys]
    ax.plot(xs, ys, "o-", ms=3, label=f"{name} (ECE {c['ece']:.3f})")
  # Zoom to the points (every probability may sit in a narrow band), same range on both
  # axes so the diagonal of perfect calibration stays the diagonal.
  values = np.concatenate(shown) if shown else np.array([0.0, 1.0])
  values = values[np.isfinite(values)] if np.isfinite(values).any() else np.array([0.0, 1.0])
  lo, hi = float(values.min()), float(values.max())
  pad = max(0.05 * (hi - lo), 1e-3)
  lo, hi = max(0.0, lo - pad), min(1.0, hi + pad)
  ax.plot([lo, hi], [lo, hi], "k:", lw=1, label="perfect calibration")
  ax.set_xlim(lo, hi)
  ax.set_ylim(lo, hi)
  ax.set_aspect("equal")
  ax.set_xlabel(f"predicted P(in top {result['k']})")
  ax.set_ylabel("observed frequency")
  ax.set_title("Reliability (bins with 10+ item-events)")
  _legend_outside(ax)
  fig.savefig(folder / "calibration.png", dpi=110, bbox_inches="tight")
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(7, 4))
  names = list(per_event)
  top = int(result["k"])
  width = 0.8 / len(names)
  for j, name in enumerate(names):
    h = np.asarray(per_event[name]["hits"], np.float64)
    freq = hit_distribution(h, top)
    ax.bar(np.arange(top + 1) + (j - (len(names) - 1) / 2) * width, freq, width,
           label=f"{name} (mean {h.mean():.3f})")
  ax.set_xticks(np.arange(top + 1))
  ax.set_xlabel(f"hits: |predicted top {top} ∩ observed top {top}|")
  ax.set_ylabel("fraction of events")
  ax.set_title("Hit distribution (an event's expected hits under ties split between\n"
               "the two nearest counts, so each bar set keeps its mean)", fontsize=9)
  _legend_outside(ax)
  fig.savefig(folder / "hits.png", dpi=110, bbox_inches="tight")
  plt.close(fig)

  if "portfolio" in result["_series"]:
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, r in result["_series"]["portfolio"].items():
      ax.plot(x, np.cumprod(1.0 + r), label=name.replace("_", " "))
    ax.set_yscale("log")
    ax.set_title(f"Cumulative returns after {result['portfolio']['cost_bps']:g} bps costs")
    ax.set_xlabel("day")
    ax.set_ylabel("wealth (log scale)")
    _legend_outside(ax)
    fig.autofmt_xdate()
    fig.savefig(folder / "cumulative_returns.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_report(result: dict, times, folder) -> pathlib.Path:
  """Write report.md, report.html, the PNG plots and metrics.json into `folder`.

  Returns the path of report.md.
  """
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  _plots(result, times, folder)
  blocks = _sections(result)
  (folder / "report.md").write_text(_markdown(blocks))
  (folder / "report.html").write_text(_html(blocks, blocks[0][1]))
  public = {k: v for k, v in result.items() if not k.startswith("_")}
  (folder / "metrics.json").write_text(json.dumps(public, indent=2, default=_json_default) + "\n")
  return folder / "report.md"


def _json_default(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, np.bool_):
    return bool(x)
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"not JSON: {type(x)}")


def summary_table(result: dict) -> str:
  """A short text table for the terminal: NLL and skill per model, the portfolio line."""
  width = max(11, *(len(name) + 1 for name in result["models"]))
  lines = [f"{result['events']} events, {result['folds']} folds; NLL nats/event "
           f"({'exact' if result['nll'] == 'exact' else 'model: upper bound, baselines: exact'}); skill = "
           f"baseline NLL - model NLL with its CI and DM p",
           f"  {'':<{width}}{'nll':>10}{'hits':>7}{'skill':>10}{'ci':>22}{'p':>9}"]
  for name, r in result["models"].items():
    s = result["skill"].get(name)
    extra = ""
    if s:
      ci = f"[{s['ci_low']:+.4f}, {s['ci_high']:+.4f}]"
      extra = f"{s['mean']:>+10.4f}{ci:>22}{s['p_value']:>9.3g}"
    lines.append(f"  {name:<{width}}{r['nll']:>10.4f}{r['hits']:>7.3f}{extra}")
  if "portfolio" in result:
    p, q = result["portfolio"], result["portfolio"]["equal_weight"]
    d = p["sharpe_diff"]
    lines.append(f"  portfolio top-{p['k']} ({p['cost_bps']:g} bps): Sharpe {p['sharpe']:.3f}, max drawdown "
                 f"{p['max_drawdown']:.3f}, turnover {p['turnover']:.3f}/day; equal weight: Sharpe "
                 f"{q['sharpe']:.3f}, max drawdown {q['max_drawdown']:.3f}, turnover {q['turnover']:.3f}/day; "
                 f"Sharpe diff {d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")
  if "extremes" in result:
    e = result["extremes"]
    if e["chance"] is not None:
      vol = "" if e["vol_corr"] is None else f"; rank corr. with {e['window']}-day volatility {e['vol_corr']:+.2f}"
      lines.append(f"  model's top-{e['k']} in the day's best {e['k']}: {e['top']['mean']:.3f}/day, in its "
                   f"worst {e['k']}: {e['bottom']['mean']:.3f}/day (chance {e['chance']:.3f}){vol}")
  return "\n".join(lines)
