"""luce-compare: one walk-forward backtest per model variant on the same events, one table.

A variant is a name and config overrides, "name:field=value;field=value"
(e.g. "s5:model.encoder=s5", "ens:model.ensemble.members=('encoder=mlp','encoder=s5')");
values are Python literals where they parse as one, strings otherwise.
Every variant walks forward over the same events and folds (`backtest.*`
is shared), so their per-event NLLs are paired: the table gives each
model's mean NLL with a block-bootstrap interval, its skill over the best
baseline (the baseline with the lowest NLL over those events) with its
interval and Diebold-Mariano p, hits@k, calibration error and train time,
beside the baselines' own rows. Each variant's backtest lives in
WORKDIR/VARIANT/ (resumed when run again); the table in
WORKDIR/compare.{md,html,json} and compare.png.
"""

from __future__ import annotations

import ast
import html
import json
import pathlib
import time

import ml_collections
import numpy as np

from luce.errors import ConfigError
from luce.eval import _significance
from luce.eval._report import score_backtest, write_report
from luce.eval._walk_forward import walk_forward

DEFAULT_VARIANTS = ("mlp:model.encoder=mlp", "s5:model.encoder=s5", "deepar:model.encoder=deepar")


def parse_variant(text: str) -> tuple[str, dict]:
  """("name", {"model.encoder": "s5", ...}) of "name:field=value;field=value"."""
  name, _, rest = str(text).partition(":")
  name = name.strip()
  if not name or not name.replace("_", "").replace("-", "").isalnum():
    raise ConfigError(f"--models entry {text!r}: the name before ':' must be letters, digits, '-' "
                      f"or '_' (it names the variant's folder).")
  overrides = {}
  for part in (p.strip() for p in rest.split(";")):
    if not part:
      continue
    field, eq, value = part.partition("=")
    if not eq:
      raise ConfigError(f"--models entry {text!r}: {part!r} is not field=value.")
    try:
      parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      parsed = value.strip()
    overrides[field.strip()] = parsed
  return name, overrides


def variant_config(config, overrides: dict):
  """A checked copy of `config` with the variant's fields set (unknown fields: ConfigError)."""
  from luce.train import checked_config, flatten
  flat = flatten(config)
  for field, value in overrides.items():
    if field not in flat:
      checked_config(_nested(field, value))  # raises ConfigError naming the field
    flat[field] = list(value) if isinstance(value, tuple) else value
  nested: dict = {}
  for field, value in flat.items():
    _put(nested, field, value)
  return checked_config(ml_collections.ConfigDict(nested))


def _nested(field: str, value) -> dict:
  out: dict = {}
  _put(out, field, value)
  return out


def _put(tree: dict, field: str, value) -> None:
  *path, leaf = field.split(".")
  for part in path:
    tree = tree.setdefault(part, {})
  tree[leaf] = value


def compare_models(config, variants, workdir, *, progress: bool = True, say=print) -> dict:
  """Walk forward each variant of `config` and tabulate them (see the module docstring).

  Returns {"source", "kind", "events", "k", "level", "best_baseline",
  "rows": [{name, nll, ci_low, ci_high, nll_kind, hits, ece, skill, skill_low,
  skill_high, p_value, train_s, total_s, kind: "model"|"baseline"}], "reports"}.
  """
  workdir = pathlib.Path(workdir)
  parsed = [parse_variant(v) for v in variants]
  names = [name for name, _ in parsed]
  if len(set(names)) != len(names):
    raise ConfigError(f"--models names must differ: {names}.")
  configs = [(name, variant_config(config, o)) for name, o in parsed]
  results, per_event, reports, seconds = {}, {}, {}, {}
  for name, c in configs:
    say(f"== {name}: model.family={c.model.family}, encoder={c.model.encoder}"
        + (f", ensemble {list(c.model.ensemble.members)} x {c.model.ensemble.seeds}"
           if c.model.ensemble.members or c.model.ensemble.seeds > 1 else ""))
    t0 = time.perf_counter()
    wf = walk_forward(c, workdir / name, progress=progress, say=say)
    result = score_backtest(wf)
    # Times add up over runs that resumed this variant's backtest (a resumed run trains only
    # the folds left).
    spent = workdir / name / "compare_seconds.json"
    before = json.loads(spent.read_text()) if spent.exists() else {"train": 0.0, "total": 0.0}
    seconds[name] = {"train": round(before["train"] + result["seconds"].get("train", 0.0), 1),
                     "total": round(before["total"] + time.perf_counter() - t0, 1)}
    spent.write_text(json.dumps(seconds[name]) + "\n")
    reports[name] = str(write_report(result, wf.times, workdir / name / "report"))
    results[name] = result
    per_event[name] = {m: s["nll"] for m, s in result["_series"]["per_event"].items()}
  first = results[names[0]]
  for name in names[1:]:
    if results[name]["events"] != first["events"] or results[name]["start"] != first["start"]:
      raise ConfigError(f"variant {name!r} walks forward over other events than {names[0]!r}: "
                        f"set backtest fields for all variants alike.")
  b = configs[0][1].backtest
  boot = dict(block=b.block or None, samples=b.bootstrap_samples, level=b.level,
              seed=int(configs[0][1].seed))
  baselines = {m: v for m, v in per_event[names[0]].items() if m != "model"}
  best = min(baselines, key=lambda m: float(np.mean(baselines[m])))
  rows = []
  for name in names:
    nll = np.asarray(per_event[name]["model"], np.float64)
    own = _significance.compare(nll, **boot)
    skill = _significance.compare(np.asarray(baselines[best]) - nll, **boot)
    r = results[name]["models"]["model"]
    rows.append({"name": name, "kind": "model", "nll_kind": results[name]["nll"],
                 "nll": own["mean"], "ci_low": own["ci_low"], "ci_high": own["ci_high"],
                 "hits": r["hits"], "ece": r["ece"], "skill": skill["mean"],
                 "skill_low": skill["ci_low"], "skill_high": skill["ci_high"],
                 "p_value": skill["p_value"], "significant": bool(skill["significant"]),
                 "train_s": seconds[name]["train"], "total_s": seconds[name]["total"]})
  for m, values in baselines.items():
    own = _significance.compare(np.asarray(values, np.float64), **boot)
    r = first["models"][m]
    rows.append({"name": m, "kind": "baseline", "nll_kind": "exact", "nll": own["mean"],
                 "ci_low": own["ci_low"], "ci_high": own["ci_high"], "hits": r["hits"],
                 "ece": r["ece"], "skill": None, "skill_low": None, "skill_high": None,
                 "p_value": None, "significant": None, "train_s": None, "total_s": None})
  return {"source": first["source"], "kind": first["kind"], "events": first["events"],
          "k": first["k"], "level": b.level, "best_baseline": best, "rows": rows, "reports": reports}


def _f(x, fmt):
  return "" if x is None else format(x, fmt)


def compare_markdown(out: dict) -> str:
  """The comparison as a Markdown table, models first, then baselines."""
  pct = round(100 * out["level"])
  lines = [f"{out['source']} ({out['kind']}s): {out['events']} walk-forward events; NLL in nats per "
           f"event with {pct}% block-bootstrap intervals; skill = {out['best_baseline']} NLL (the best "
           f"baseline) - model NLL, DM p; hits@{out['k']}; ECE of inclusion probabilities.", "",
           "| model | NLL | interval | kind | skill vs best baseline | interval | DM p | verdict | "
           f"hits@{out['k']} | ECE | train s |",
           "| --- | ---: | --- | --- | ---: | --- | ---: | --- | ---: | ---: | ---: |"]
  for r in out["rows"]:
    if r["kind"] == "model":
      verdict = ("better" if r["skill"] > 0 else "worse") if r["significant"] else "no skill"
      lines.append(f"| {r['name']} | {r['nll']:.4f} | [{r['ci_low']:.4f}, {r['ci_high']:.4f}] | "
                   f"{r['nll_kind']} | {r['skill']:+.4f} | [{r['skill_low']:+.4f}, {r['skill_high']:+.4f}] | "
                   f"{r['p_value']:.3g} | {verdict} | {r['hits']:.3f} | {_f(r['ece'], '.4f')} | "
                   f"{r['train_s']:.0f} |")
    else:
      lines.append(f"| {r['name']} (baseline) | {r['nll']:.4f} | [{r['ci_low']:.4f}, {r['ci_high']:.4f}] | "
                   f"exact | | | | | {r['hits']:.3f} | {_f(r['ece'], '.4f')} | |")
  return "\n".join(lines) + "\n"


def write_compare(out: dict, folder) -> pathlib.Path:
  """compare.md, compare.html, compare.json and compare.png in `folder`; the .md path."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  md = compare_markdown(out)
  (folder / "compare.md").write_text(md)
  (folder / "compare.json").write_text(json.dumps(out, indent=2) + "\n")
  rows = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|"))
                 + "</tr>\n" for line in md.splitlines()[4:])
  head = "".join(f"<th>{html.escape(c.strip())}</th>" for c in md.splitlines()[2].strip("|").split("|"))
  (folder / "compare.html").write_text(
      f"<!doctype html><meta charset='utf-8'><title>luce-compare</title>"
      f"<p>{html.escape(md.splitlines()[0])}</p><table border=1 cellpadding=4>"
      f"<tr>{head}</tr>\n{rows}</table><p><img src='compare.png'></p>\n")
  _plot(out, folder / "compare.png")
  return folder / "compare.md"


def _plot(out: dict, path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = sorted(out["rows"], key=lambda r: r["nll"])
  fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
  y = np.arange(len(rows))
  colours = ["tab:blue" if r["kind"] == "model" else "tab:gray" for r in rows]
  for j, (r, colour) in enumerate(zip(rows, colours)):
    ax.errorbar([r["nll"]], [j], xerr=[[r["nll"] - r["ci_low"]], [r["ci_high"] - r["nll"]]],
                fmt="o", color=colour, capsize=3)
  ax.set_yticks(y, [r["name"] + ("" if r["kind"] == "model" else " (baseline)") for r in rows])
  ax.invert_yaxis()
  ax.set_xlabel(f"walk-forward NLL, nats per event ({round(100 * out['level'])}% interval)")
  ax.set_title(out["source"], fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
