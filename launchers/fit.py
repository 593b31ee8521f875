"""luce-fit: static Plackett-Luce strengths of the items in an event table.

    luce-fit                                   # S&P 500 daily return rankings (skfolio, offline)
    luce-fit --data='rankings:rankings/nascar2002_orderings.csv?catalog=rankings/nascar2002_drivers.csv'

Prints one row per item, strongest first: log-strength (centred), its standard
error from the Fisher information, a 95% interval, and how often the item was
picked first. `--out=FILE.csv` also writes the full table.
"""

from __future__ import annotations

import csv
import logging
import time

from absl import app, flags
import numpy as np

import luce
from luce import data as luce_data
from luce.launchers._cli import launch

_DATA = flags.DEFINE_string("data", "prices:sp500", "Event source, e.g. prices:sp500, draws:PATH, "
                            "ergast:DIR, rankings:PATH, events:PATH.parquet (see luce.data.read).")
_AVAILABLE = flags.DEFINE_enum(
    "available", "table", ["table", "listed"],
    "Which items each event chose from: 'table' = the table's availability (all items "
    "unless the source says otherwise; items not listed lost), 'listed' = only the items "
    "the event lists (complete rankings of choice sets, e.g. a race's finishers).")
_PRIOR = flags.DEFINE_float("prior", 0.01, "Gaussian prior precision on each log-strength (0 = plain MLE).")
_TOP = flags.DEFINE_integer("top", 25, "Rows to print (all are written with --out).")
_OUT = flags.DEFINE_string("out", None, "Optional CSV path for the full table.")


def fit_table(table, available: str, prior: float):
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
  fit = luce.fit_pl(rankings, table.n_items, where=where, counts=counts, prior=prior)
  return fit, rankings, time.perf_counter() - start


def format_table(table, fit, rankings, top: int) -> tuple[list[str], list[list]]:
  names = list(table.catalog.names or table.catalog.labels)
  firsts = np.bincount(rankings[:, 0][rankings[:, 0] >= 0], minlength=table.n_items)
  listed = np.bincount(rankings[rankings >= 0], minlength=table.n_items)
  order = np.argsort(-fit.log_strengths, kind="stable")
  header = ["rank", "item", "log_strength", "stderr", "ci95_low", "ci95_high", "first", "events"]
  rows = []
  for rank, i in enumerate(order[:top], 1):
    th, se = fit.log_strengths[i], fit.stderr[i]
    rows.append([rank, names[i], th, se, th - 1.96 * se, th + 1.96 * se, int(firsts[i]), int(listed[i])])
  return header, rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # JAX logs its search for accelerators at INFO; that is noise on a CPU.
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  table = luce_data.read(_DATA.value)   # a LuceError is one line, exit 2 (launch)
  fit, rankings, seconds = fit_table(table, _AVAILABLE.value, _PRIOR.value)
  m = int((rankings[:, 0] >= 0).sum())
  print(f"Plackett-Luce fit of {_DATA.value}: {m} events, {table.n_items} items, "
        f"prior {fit.prior:g}, {fit.n_iter} Newton steps in {seconds:.2f} s")
  print(f"log-likelihood {fit.log_likelihood:.3f} nats ({fit.log_likelihood / max(m, 1):.4f} per event)")
  header, rows = format_table(table, fit, rankings, _TOP.value)
  width = max(len(str(r[1])) for r in rows) if rows else 4
  print(f"{'rank':>4}  {'item':<{width}}  {'log-str':>8}  {'stderr':>7}  {'95% interval':>17}  {'first':>5}  {'events':>6}")
  for r in rows:
    print(f"{r[0]:>4}  {str(r[1]):<{width}}  {r[2]:>8.3f}  {r[3]:>7.3f}  [{r[4]:>7.3f}, {r[5]:>7.3f}]  "
          f"{r[6]:>5}  {r[7]:>6}")
  if _OUT.value:
    _, all_rows = format_table(table, fit, rankings, table.n_items)
    with open(_OUT.value, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(header)
      writer.writerows(all_rows)
    print(f"wrote {_OUT.value}")
  return 0


def run():
  launch(main, __name__)


if __name__ == "__main__":
  run()
