"""luce-fit: static Plackett-Luce strengths of the items in an event table.

    luce-fit                                   # S&P 500 daily return rankings (skfolio, offline)
    luce-fit --data='rankings:rankings/nascar2002_orderings.csv?catalog=rankings/nascar2002_drivers.csv'

Prints which items each event chose from (the reading: `--available`), the
log-likelihood, AIC and BIC, then a PlackettLuce-style summary, one row per
item, strongest first: log-strength (centred, or 0 at `--ref`), its standard
error from the Fisher information, z, the two-sided p-value, the quasi
standard error (Firth 2003; for comparisons that do not depend on the
constraint) and how often the item was picked first. `--output=DIR` (or
`--output=FILE.csv`) writes the full table as summary.csv and summary.json
(FILE.csv and FILE.json).

Without `--available`, a table with no availability column whose events are
partial orderings (rankings that list some of the items: a race lists its
entrants) is read entrants-only (`listed`); anything else as the table says.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time

from absl import app, flags
import numpy as np

import luce
from luce import data as luce_data
from luce.errors import InputError
from luce.launchers._cli import launch

_DATA = flags.DEFINE_string("data", "prices:sp500", "Event source, e.g. prices:sp500, draws:PATH, "
                            "ergast:DIR, rankings:PATH, events:PATH.parquet (see luce.data.read).")
_AVAILABLE = flags.DEFINE_enum(
    "available", "auto", ["auto", "table", "listed"],
    "Which items each event chose from: 'table' = the table's availability (all items "
    "unless the source says otherwise; items not listed lost), 'listed' = only the items "
    "the event lists (complete rankings of choice sets, e.g. a race's finishers), 'auto' = "
    "'listed' when the table has no availability column and its events are partial "
    "orderings (rankings listing some of the items), else 'table'.")
_PRIOR = flags.DEFINE_float("prior", None, "Gaussian prior precision on each log-strength (0 = plain "
                            "MLE); default 0.01, or 0 with --npseudo > 0.")
_NPSEUDO = flags.DEFINE_float("npseudo", 0.0, "Pseudo-rankings per item and direction against a "
                              "ghost item (R PlackettLuce's npseudo; 0 = none).")
_REF = flags.DEFINE_string("ref", None, "Reference item (label, name or id) whose log-strength is "
                           "fixed at 0; default: log-strengths sum to zero.")
_TOP = flags.DEFINE_integer("top", 25, "Rows to print (all are written with --output).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Where to write the full summary: a folder (summary.csv and summary.json in "
    "it) or a FILE.csv / FILE.json path (both FILE.csv and FILE.json are written).")
flags.DEFINE_alias("out", "output")


def choose_reading(table, available: str) -> tuple[str, str]:
  """The availability reading to use ('table' or 'listed') and why."""
  if available != "auto":
    return available, "as --available says"
  if table.has_availability():
    return "table", "default: the table has an availability column"
  rankings = table.items_array()
  lengths = (rankings >= 0).sum(axis=1)
  kinds = set(table.events.column("kind").to_pylist()) if table.n_events else set()
  partial = kinds == {"ranking"} and bool(np.any((lengths > 0) & (lengths < table.n_items)))
  if partial:
    return "listed", (f"default: the table has no availability column and its events are partial "
                      f"orderings (each lists {lengths.mean():.3g} of {table.n_items} items on "
                      f"average), read as rankings of their entrants; --available=table reads "
                      f"every unlisted item as an entrant that lost")
  return "table", ("default: the table has no availability column and its events list every "
                   "item (or are sets)")


def fit_table(table, available: str, prior: float | None, npseudo: float = 0.0):
  """Fits `luce.fit_pl` to an EventTable; returns (fit, rankings, seconds)."""
  rankings = table.items_array()
  if available == "listed":
    where = luce.listed_items(rankings, table.n_items)
  else:
    where = table.available_mask()
    if bool(np.all(where)):
      where = None
  counts = table.weights()
  start = time.perf_counter()
  fit = luce.fit_pl(rankings, table.n_items, where=where, counts=counts, prior=prior,
                    npseudo=npseudo)
  return fit, rankings, time.perf_counter() - start


def resolve_ref(table, ref: str | None) -> int | None:
  """The item id of --ref (a catalog label, a name, or an id), or None."""
  if ref is None or ref == "":
    return None
  labels = [str(v) for v in table.catalog.labels]
  names = [str(v) for v in (table.catalog.names or table.catalog.labels)]
  for pool in (labels, names):
    if ref in pool:
      return pool.index(ref)
  if ref.isdigit() and int(ref) < table.n_items:
    return int(ref)
  raise InputError(f"--ref={ref!r} is not an item label, name or id of the table "
                   f"({table.n_items} items, e.g. {names[0]!r}).")


HEADER = ["rank", "item", "log_strength", "stderr", "z", "p", "quasi_se", "ci95_low", "ci95_high",
          "first", "events"]


def format_table(table, fit, rankings, top: int, ref: int | None = None) -> tuple[list[str], list[list]]:
  """The summary rows, strongest first: HEADER columns."""
  names = list(table.catalog.names or table.catalog.labels)
  firsts = np.bincount(rankings[:, 0][rankings[:, 0] >= 0], minlength=table.n_items)
  listed = np.bincount(rankings[rankings >= 0], minlength=table.n_items)
  summary = luce.summary_table(fit, ref=ref)
  order = np.argsort(-fit.log_strengths, kind="stable")
  rows = []
  for rank, i in enumerate(order[:top], 1):
    th, se = summary["estimate"][i], summary["se"][i]
    rows.append([rank, names[i], th, se, summary["z"][i], summary["p"][i], summary["quasi_se"][i],
                 th - 1.96 * se, th + 1.96 * se, int(firsts[i]), int(listed[i])])
  return HEADER, rows


def output_paths(output: str) -> tuple[str, str]:
  """(csv path, json path) of --output."""
  stem, ext = os.path.splitext(output)
  if ext.lower() in (".csv", ".json"):
    return stem + ".csv", stem + ".json"
  os.makedirs(output, exist_ok=True)
  return os.path.join(output, "summary.csv"), os.path.join(output, "summary.json")


def _number(v):
  if isinstance(v, (float, np.floating)):
    return float(v) if math.isfinite(v) else None
  if isinstance(v, np.integer):
    return int(v)
  return v


def write_summary(output: str, header, rows, info: dict) -> tuple[str, str]:
  csv_path, json_path = output_paths(output)
  with open(csv_path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  doc = {**{k: _number(v) for k, v in info.items()},
         "items": [{h: _number(v) for h, v in zip(header, row)} for row in rows]}
  with open(json_path, "w") as f:
    json.dump(doc, f, indent=1, allow_nan=False)
  return csv_path, json_path


def _fmt(v, spec):
  return format(v, spec) if math.isfinite(v) else format("—" if math.isnan(v) else "inf", spec[:-3])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # JAX logs its search for accelerators at INFO; that is noise on a CPU.
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  table = luce_data.read(_DATA.value)   # a LuceError is one line, exit 2 (launch)
  reading, why = choose_reading(table, _AVAILABLE.value)
  ref = resolve_ref(table, _REF.value)
  fit, rankings, seconds = fit_table(table, reading, _PRIOR.value, _NPSEUDO.value)
  m = int((rankings[:, 0] >= 0).sum())
  pseudo = f", {fit.npseudo:g} pseudo-rankings per item" if fit.npseudo else ""
  print(f"Plackett-Luce fit of {_DATA.value}: {m} events, {table.n_items} items, "
        f"prior {fit.prior:g}{pseudo}, {fit.n_iter} Newton steps in {seconds:.2f} s")
  what = {"listed": "entrants-only: each event chose among the items it lists",
          "table": "the table's availability: items an event does not list were available and lost"}
  print(f"availability: {reading} ({what[reading]}); {why}")
  print(f"log-likelihood {fit.log_likelihood:.3f} nats ({fit.log_likelihood / max(m, 1):.4f} per event), "
        f"AIC {luce.aic(fit):.1f}, BIC {luce.bic(fit):.1f}")
  constraint = "sum to zero" if ref is None else f"0 at {list(table.catalog.names or table.catalog.labels)[ref]}"
  header, rows = format_table(table, fit, rankings, _TOP.value, ref)
  width = max([len(str(r[1])) for r in rows] + [4])
  print(f"{'rank':>4}  {'item':<{width}}  {'estimate':>8}  {'SE':>7}  {'z':>7}  {'p':>9}  "
        f"{'quasi-SE':>8}  {'first':>5}  {'events':>6}    (log-strengths: {constraint})")
  for r in rows:
    print(f"{r[0]:>4}  {str(r[1]):<{width}}  {_fmt(r[2], '>8.3f')}  {_fmt(r[3], '>7.3f')}  "
          f"{_fmt(r[4], '>7.2f')}  {_fmt(r[5], '>9.3g')}  {_fmt(r[6], '>8.3f')}  {r[9]:>5}  {r[10]:>6}")
  if _OUTPUT.value:
    _, all_rows = format_table(table, fit, rankings, table.n_items, ref)
    info = {"data": _DATA.value, "available": reading, "available_reason": why,
            "n_events": m, "n_items": table.n_items, "prior": fit.prior, "npseudo": fit.npseudo,
            "constraint": constraint, "log_likelihood": fit.log_likelihood, "aic": luce.aic(fit),
            "bic": luce.bic(fit), "n_iter": fit.n_iter}
    csv_path, json_path = write_summary(_OUTPUT.value, header, all_rows, info)
    print(f"wrote {csv_path} and {json_path}")
  return 0


def run():
  launch(main, __name__)


if __name__ == "__main__":
  run()
