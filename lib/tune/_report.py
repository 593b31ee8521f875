"""What a tuning run leaves in its workdir: best.flags, trials.csv and report/.

- best.flags: the best trial's values as `--config.FIELD=VALUE` lines, run
  with `luce-train --config=configs/NAME.py --flagfile=WORKDIR/best.flags
  --workdir=...`;
- trials.csv: one row per trial (number, state, value, each parameter, its
  folder, seconds, whether it is the config's default);
- report/report.md with the trial table (best first), the default's value
  beside the best, and two plots: history.png (each trial's objective and the
  best so far) and importance.png (fANOVA parameter importances);
- tune.json: the best and default values and the held-out check.

The best of many trials on the validation split is biased low (it was chosen
there), so with the "valid" objective the report also scores the best and the
default trial's best checkpoints on the test split, which no trial saw, and
gives the difference with its block-bootstrap interval: the honest answer to
"did tuning help".
"""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np

from luce.train._space import Param


def _short_value(value) -> str:
  return f"{value:.4g}" if isinstance(value, float) else str(value)


def _format_value(value) -> str:
  if isinstance(value, float):
    return repr(value)
  return str(value)


def best_flags(study, params: list[Param], config_path: str | None = None) -> str:
  """The best trial as absl flag lines (a --flagfile)."""
  best = study.best_trial
  lines = [f"# luce-tune: best of study {study.study_name!r}, trial {best.number}, objective "
           f"{best.value:.6f}",
           f"# luce-train --config={config_path or 'configs/NAME.py'} --flagfile=THIS_FILE "
           f"--workdir=DIR"]
  for p in params:
    if p.field in best.params:
      lines.append(f"--config.{p.field}={_format_value(best.params[p.field])}")
  return "\n".join(lines) + "\n"


def _rows(study, params: list[Param]) -> list[dict]:
  out = []
  for t in study.trials:
    row = {"number": t.number, "state": t.state.name, "value": t.value,
           **{p.field: t.params.get(p.field) for p in params},
           "default": bool(t.user_attrs.get("default", False)),
           "retry_of": t.user_attrs.get("retry_of", ""),
           "seconds": t.user_attrs.get("seconds"),
           "last_step": max(t.intermediate_values) if t.intermediate_values else "",
           "workdir": t.user_attrs.get("workdir", ""),
           "note": t.user_attrs.get("failed_because", "")}
    out.append(row)
  return out


def default_value(study) -> float | None:
  for t in study.trials:
    if t.user_attrs.get("default") and t.value is not None:
      return float(t.value)
  return None


def held_out(study, config) -> dict | None:
  """Test-split NLL of the best and the default trial (their best checkpoints)
  and the skill of the best over the default (`luce.eval.compare`: mean of
  default - best per event, block-bootstrap interval, Diebold-Mariano p)."""
  from luce.eval import compare
  from luce.train import load_run
  if config.tune.objective != "valid":
    return None
  complete = [t for t in study.trials if t.state.name == "COMPLETE"]
  default = [t for t in complete if t.user_attrs.get("default")]
  if not complete or not default:
    return None
  best = study.best_trial
  nll = {}
  for name, trial in (("best", best), ("default", default[0])):
    run = load_run(trial.user_attrs["workdir"], checkpoint="best")
    arrays = run.prepared.split_arrays("test")
    if len(arrays["items"]) == 0:
      return None
    nll[name] = run.family.nll(run.params, arrays, run.config.train.eval_batch_size)
  result = compare(nll["default"] - nll["best"], level=config.backtest.level,
                   samples=config.backtest.bootstrap_samples)
  return {"best_trial": best.number, "default_trial": default[0].number,
          "best_test_nll": float(np.mean(nll["best"])), "default_test_nll": float(np.mean(nll["default"])),
          "skill": result}


def _plots(study, params, folder: pathlib.Path) -> list[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  done = [t for t in study.trials if t.value is not None]
  written = []
  if done:
    fig, ax = plt.subplots(figsize=(7, 4))
    numbers = np.array([t.number for t in done])
    values = np.array([t.value for t in done])
    ax.scatter(numbers, values, s=18, label="trial objective", color="tab:blue")
    ax.step(numbers, np.minimum.accumulate(values), where="post", color="tab:red", label="best so far")
    d = default_value(study)
    if d is not None:
      ax.axhline(d, color="grey", linestyle="--", label="config default")
    ax.set_xlabel("trial number")
    ax.set_ylabel("objective (NLL per event, lower is better)")
    ax.set_title(f"optimisation history of {study.study_name}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(folder / "history.png", dpi=110)
    plt.close(fig)
    written.append("history.png")
  importances = param_importances(study)
  if importances:
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(importances)))
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="tab:green")
    ax.set_xlabel("importance (fANOVA share of the objective's variance)")
    ax.set_ylabel("parameter")
    ax.set_title("parameter importances")
    fig.tight_layout()
    fig.savefig(folder / "importance.png", dpi=110)
    plt.close(fig)
    written.append("importance.png")
  return written


def param_importances(study) -> dict:
  """fANOVA importances over the complete trials (empty below 3 of them or with
  one parameter that never varied)."""
  import optuna
  complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
  if len(complete) < 3:
    return {}
  try:
    return dict(optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)))
  except (ValueError, RuntimeError):
    return {}


def write_outputs(study, config, params: list[Param], workdir, *, say=print, config_path=None):
  """Write best.flags, trials.csv and report/ (module docstring); a TuneResult."""
  from luce.tune._study import TuneResult
  workdir = pathlib.Path(workdir)
  rows = _rows(study, params)
  files = {}
  with open(workdir / "trials.csv", "w", newline="") as f:
    if rows:
      writer = csv.DictWriter(f, fieldnames=list(rows[0]))
      writer.writeheader()
      writer.writerows(rows)
  files["trials"] = workdir / "trials.csv"
  report = workdir / "report"
  report.mkdir(exist_ok=True)
  best_value, best_params = None, {}
  if any(t.value is not None and t.state.name == "COMPLETE" for t in study.trials):
    best = study.best_trial
    best_value, best_params = float(best.value), dict(best.params)
    files["best_flags"] = workdir / "best.flags"
    files["best_flags"].write_text(best_flags(study, params, config_path))
  d = default_value(study)
  plots = _plots(study, params, report)
  lines = [f"# luce-tune: study `{study.study_name}`", ""]
  counts = {}
  for r in rows:
    counts[r["state"]] = counts.get(r["state"], 0) + 1
  lines.append("Trials: " + ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())) + ".")
  lines.append(f"Objective: {config.tune.objective} NLL per event (lower is better); sampler "
               f"{config.tune.sampler}, pruner {config.tune.pruner}.")
  lines.append("")
  lines.append("Space: " + "; ".join(p.describe() for p in params))
  lines.append("")
  if best_value is not None:
    lines.append(f"Best: trial {study.best_trial.number}, {best_value:.4f}"
                 + (f"; the config's default: {d:.4f} ({d - best_value:+.4f} better)." if d is not None
                    else "; the config's default was not among the trials."))
    lines.append("")
  header = ["trial", "state", "value", *[p.field for p in params], "seconds", "note"]
  lines.append("| " + " | ".join(header) + " |")
  lines.append("|" + " --- |" * len(header))
  rank = {"COMPLETE": 0, "PRUNED": 1}
  ordered = sorted(rows, key=lambda r: (rank.get(r["state"], 2), r["value"] if r["value"] is not None else 0,
                                        r["number"]))
  for r in ordered:
    complete = r["state"] == "COMPLETE"
    value = f"{r['value']:.4f}" if complete and r["value"] is not None else ""
    seconds = "" if r["seconds"] is None else f"{r['seconds']:.0f}"
    if r["state"] == "PRUNED":
      note = f"pruned at step {r['last_step']} (NLL {r['value']:.4f} then)" if r["value"] is not None else "pruned"
    else:
      note = r["note"][:60]
    if r["default"]:
      note = "config default" + (f"; {note}" if note else "")
    if r["retry_of"] != "":
      note = f"rerun of {r['retry_of']}" + (f"; {note}" if note else "")
    cells = [str(r["number"]), r["state"].lower(), value,
             *[_short_value(r[p.field]) if r[p.field] is not None else "" for p in params], seconds, note]
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  check = held_out(study, config) if best_value is not None else None
  if check is not None:
    k = check["skill"]
    lines.append(f"Held out (the test split, which no trial saw): trial {check['best_trial']} "
                 f"{check['best_test_nll']:.4f} against the default's {check['default_test_nll']:.4f} "
                 f"nats per event; the best over the default {k['mean']:+.4f} "
                 f"[{k['ci_low']:+.4f}, {k['ci_high']:+.4f}] ({config.backtest.level:.0%} block "
                 f"bootstrap, DM p = {k['p_value']:.3g}): "
                 + ("tuning helped on held-out data." if k["significant"] and k["mean"] > 0 else
                    "worse on held-out data." if k["significant"] else
                    "no significant difference on held-out data."))
    lines.append("")
  for name in plots:
    lines.append(f"![{name}]({name})")
  (report / "report.md").write_text("\n".join(lines) + "\n")
  files["report"] = report / "report.md"
  files["json"] = workdir / "tune.json"
  files["json"].write_text(json.dumps({"study": study.study_name, "best_value": best_value,
                                       "best_params": best_params, "default_value": d,
                                       "held_out": check, "states": counts}, indent=2) + "\n")
  if best_value is not None:
    say(f"best: trial {study.best_trial.number}, NLL {best_value:.4f}"
        + (f" (config default {d:.4f}, {d - best_value:+.4f})" if d is not None else ""))
    if check is not None:
      k = check["skill"]
      say(f"  held out (test split): best {check['best_test_nll']:.4f}, default "
          f"{check['default_test_nll']:.4f}, difference {k['mean']:+.4f} [{k['ci_low']:+.4f}, "
          f"{k['ci_high']:+.4f}]")
    say(f"  {files['best_flags']}: luce-train --config=... --flagfile={files['best_flags']} "
        f"--workdir=DIR")
  else:
    say("no trial finished yet")
  say(f"  trials: {files['trials']}; report: {files['report']}")
  return TuneResult(study=study, best_value=best_value, best_params=best_params, default_value=d,
                    files=files, held_out=check)
