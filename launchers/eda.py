"""luce-eda: explore an event table and write a report with plots.

    luce-eda --data=draws:draws/powerball.csv --out=/tmp/eda-powerball
    luce-eda --data=ergast:rankings/f1_1950_2019?classified=true --out=/tmp/eda-f1

Writes DIR/report.md, DIR/report.html and DIR/*.png, and prints a summary with
the p-value of every test against the uniform null. The numbers come from
`luce.data.explore`; this file only draws and writes them.
"""

from __future__ import annotations

import html
import os
import pathlib
import time

from absl import app, flags
from luce.launchers._cli import launch

flags.DEFINE_string("data", None, "Data source, e.g. draws:draws/powerball.csv (see luce.data.read).")
flags.DEFINE_string("out", None, "Folder for report.md, report.html and the PNG plots.")
flags.DEFINE_enum("on_invalid", "raise", ["raise", "report"],
                  "raise: stop at the first invalid row; report: list every problem.")
flags.DEFINE_integer("bucket_size", 10, "Width of the fixed label ranges (1-10, 11-20, ...).")
flags.DEFINE_integer("clusters", 5, "Number of learned item clusters.")
flags.DEFINE_integer("sims", 200, "Monte Carlo simulations of the uniform null.")
flags.DEFINE_integer("seed", 0, "Seed of the simulations and clustering.")
FLAGS = flags.FLAGS


def _fmt_p(p: float) -> str:
  return f"{p:.3g}" if p >= 1e-4 else f"{p:.2e}"


class Report:
  """Blocks written both as Markdown and as HTML."""

  def __init__(self, title: str):
    self.title = title
    self.blocks: list[tuple[str, object]] = []

  def heading(self, text):
    self.blocks.append(("h2", text))

  def text(self, text):
    self.blocks.append(("p", text))

  def table(self, header, rows):
    self.blocks.append(("table", (header, rows)))

  def image(self, name, caption):
    self.blocks.append(("img", (name, caption)))

  def markdown(self) -> str:
    out = [f"# {self.title}", ""]
    for kind, value in self.blocks:
      if kind == "h2":
        out += [f"## {value}", ""]
      elif kind == "p":
        out += [value, ""]
      elif kind == "table":
        header, rows = value
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        out.append("")
      else:
        name, caption = value
        out += [f"![{caption}]({name})", ""]
    return "\n".join(out)

  def html(self) -> str:
    e = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(self.title)}</title>",
           "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
           "img{max-width:100%}</style></head><body>", f"<h1>{e(self.title)}</h1>"]
    for kind, value in self.blocks:
      if kind == "h2":
        out.append(f"<h2>{e(value)}</h2>")
      elif kind == "p":
        out.append(f"<p>{e(value)}</p>")
      elif kind == "table":
        header, rows = value
        out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows]
        out.append("</table>")
      else:
        name, caption = value
        out.append(f"<figure><img src='{e(name)}' alt='{e(caption)}'><figcaption>{e(caption)}"
                   f"</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def _bar_observed_expected(plt, path, test, title, xlabel, top=None, labels=None):
  import numpy as np
  obs, exp = test.observed, test.expected
  names = list(labels if labels is not None else test.bins)
  idx = np.arange(len(obs))
  if top is not None and len(obs) > top:
    idx = np.argsort(-obs)[:top]
  fig, ax = plt.subplots(figsize=(max(6, 0.18 * len(idx) + 2), 3.6))
  ax.bar(range(len(idx)), obs[idx], color="#4c72b0", label="observed")
  ax.plot(range(len(idx)), exp[idx], "o-", color="#dd8452", ms=3, label="expected (uniform)")
  ax.set_xticks(range(len(idx)))
  ax.set_xticklabels([names[i] for i in idx], rotation=90 if len(idx) > 12 else 0, fontsize=7)
  ax.set_title(f"{title}  (chi-square p = {_fmt_p(test.p_value)})", fontsize=10)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("picks")
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)


def write_report(table, eda, out: pathlib.Path, source: str) -> Report:
  """Draw the plots into `out` and return the report (not yet written)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  from luce.data._eda import holm
  names = np.asarray(table.catalog.names)
  labels = np.asarray(table.catalog.labels)
  r = Report(f"EDA of {source}")
  r.text(f"{eda.n_events} events, {eda.n_items} items, kind {eda.kind}, "
         f"k = {eda.k if eda.k is not None else f'up to {table.k_max}'}; content hash "
         f"{table.content_hash[:16]}. Null hypothesis everywhere: each event picks its items "
         f"uniformly among those available to it.")
  r.heading("Verdict")
  r.text(eda.verdict(0.01))
  r.heading("p-values")
  adjusted, _ = holm(eda.p_values(), 0.01)
  r.table(["test", "p-value", "Holm-adjusted"],
          [(k, _fmt_p(v), _fmt_p(adjusted.get(k, float("nan")))) for k, v in eda.p_values().items()])

  r.heading("Item frequencies")
  f = eda.frequencies
  r.text(f"chi-square = {f.statistic:.1f} on {f.dof} degrees of freedom, p = {_fmt_p(f.p_value)}.")
  tick = labels if table.catalog.numeric_labels() is not None else names
  _bar_observed_expected(plt, out / "frequencies.png", f, "Picks per item", "item",
                         top=100, labels=tick)
  r.image("frequencies.png", "observed vs expected picks per item (the 100 most picked when more)")

  c = eda.cooccurrence
  r.heading("Pair co-occurrence")
  r.text(f"sum over pairs of (O-E)^2/E = {c.statistic:.1f} (dispersion {c.dispersion:.3f}; about 1 "
         f"under the null), Monte Carlo p = {_fmt_p(c.p_value)} from {c.n_sims} uniform tables. "
         f"Strongest pair: {names[c.max_pair[0]]} & {names[c.max_pair[1]]} (|z| = {c.max_z:.2f}, "
         f"p = {_fmt_p(c.min_pair_p)}, Bonferroni {_fmt_p(c.p_bonferroni)}).")
  show = np.argsort(-c.observed.sum(axis=0))[:60] if len(c.observed) > 60 else np.arange(len(c.observed))
  with np.errstate(divide="ignore", invalid="ignore"):
    z = np.where(c.expected > 0, (c.observed - c.expected) / np.sqrt(c.expected), 0)[np.ix_(show, show)]
  fig, ax = plt.subplots(figsize=(6.5, 5.5))
  lim = max(3.0, float(np.abs(z).max()))
  im = ax.imshow(z, cmap="RdBu_r", vmin=-lim, vmax=lim)
  ax.set_title("pair residuals (O-E)/sqrt(E)", fontsize=10)
  step = max(1, len(show) // 30)
  ticks = np.arange(0, len(show), step)
  ax.set_xticks(ticks)
  ax.set_xticklabels([str(tick[i]) for i in show[ticks]], rotation=90, fontsize=6)
  ax.set_yticks(ticks)
  ax.set_yticklabels([str(tick[i]) for i in show[ticks]], fontsize=6)
  ax.set_xlabel("item")
  ax.set_ylabel("item")
  fig.colorbar(im, ax=ax, label="standardised residual")
  fig.tight_layout()
  fig.savefig(out / "cooccurrence.png", dpi=110)
  plt.close(fig)
  r.image("cooccurrence.png", "standardised pair residuals, items labelled on the axes "
          "(the 60 most picked, most picked first, when there are more; else catalog order)")

  r.heading("Buckets and clusters")
  b = eda.buckets
  r.text(f"{b.name}: chi-square = {b.statistic:.1f}, dof {b.dof}, p = {_fmt_p(b.p_value)}.")
  _bar_observed_expected(plt, out / "buckets.png", b, b.name, "label range")
  r.image("buckets.png", "observed vs expected picks per fixed range")
  cl = eda.clusters
  sizes = np.bincount(cl.labels[cl.labels >= 0])
  r.text(f"{len(sizes)} k-means clusters from {cl.basis}: score {cl.score:.3f}, Monte Carlo "
         f"p = {_fmt_p(cl.p_value)} against clusters learned on {cl.n_sims} uniform tables.")
  rows = []
  for j in range(len(sizes)):
    members = np.flatnonzero(cl.labels == j)
    order = members[np.argsort(-f.observed[members])]
    rows.append((j, len(members), ", ".join(str(x) for x in tick[order][:12]) +
                 (" ..." if len(members) > 12 else "")))
  r.table(["cluster", "items", "members (most picked first)"], rows)

  if eda.patterns:
    r.heading("Patterns under the uniform null")
    rows = []
    pats = {k: v for k, v in eda.patterns.items() if k != "sum"}
    fig, axes = plt.subplots(1, len(pats) + 1, figsize=(4 * (len(pats) + 1), 3.4))
    for ax, test in zip(axes, pats.values()):
      x = np.arange(len(test.observed))
      ax.bar(x, test.observed, color="#4c72b0", label="observed")
      ax.plot(x, test.expected, "o-", color="#dd8452", ms=3, label="expected")
      step = max(1, len(x) // 10)
      ax.set_xticks(x[::step])
      ax.set_xticklabels(list(test.bins)[::step], fontsize=7)
      ax.set_title(f"{test.name}\np = {_fmt_p(test.p_value)}", fontsize=9)
      ax.set_xlabel("value per draw")
      ax.set_ylabel("draws")
      rows.append((test.name, ", ".join(f"{o:.0f}" for o in test.observed),
                   ", ".join(f"{e:.1f}" for e in test.expected), f"{test.statistic:.2f}", test.dof,
                   _fmt_p(test.p_value)))
    s = eda.patterns["sum"]
    ax = axes[-1]
    bins = np.linspace(min(s.sums.min(), s.null_sample.min()), max(s.sums.max(), s.null_sample.max()), 40)
    ax.hist(s.null_sample, bins=bins, density=True, alpha=0.5, color="#dd8452", label="uniform")
    ax.hist(s.sums, bins=bins, density=True, alpha=0.6, color="#4c72b0", label="observed")
    ax.set_title(f"sum of picks\nmean p = {_fmt_p(s.p_mean)}, KS p = {_fmt_p(s.p_ks)}", fontsize=9)
    ax.set_xlabel("sum of the labels picked")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "patterns.png", dpi=110)
    plt.close(fig)
    r.table(["pattern", "observed", "expected", "chi-square", "dof", "p"], rows)
    r.text(f"Sum of picks: observed mean {s.sums.mean():.2f}, null mean {s.null_mean:.2f} "
           f"(sd per draw {s.null_sd:.2f}), z = {s.z:.2f}, p = {_fmt_p(s.p_mean)}; KS against "
           f"{len(s.null_sample)} simulated draws: D = {s.ks_statistic:.4f}, p = {_fmt_p(s.p_ks)}.")
    r.image("patterns.png", "patterns: observed vs expected under the uniform null")

  if eda.wins is not None:
    w = eda.wins
    r.heading("Rankings: wins, positions, stability")
    r.text(f"Wins against uniform winners among the entrants: chi-square = {w.test.statistic:.1f}, "
           f"dof {w.test.dof}, p = {_fmt_p(w.test.p_value)}.")
    top = np.argsort(-w.wins)[:15]
    r.table(["item", "wins", "expected wins", "starts", "win rate", "mean position"],
            [(names[i], int(w.wins[i]), f"{w.expected_wins[i]:.1f}", int(w.starts[i]),
              f"{w.win_rate[i]:.3f}", f"{w.mean_position[i]:.1f}") for i in top])
    _bar_observed_expected(plt, out / "wins.png", w.test, "Wins per item (top 30)", "item",
                           top=30, labels=names)
    r.image("wins.png", "observed vs expected wins (30 most winning items)")
    st = eda.stability
    r.text(f"Rank stability: mean Kendall tau between consecutive events = {st.mean_tau:.3f} "
           f"(0 under the null), t = {st.t_statistic:.1f}, p = {_fmt_p(st.p_value)}.")
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ok = np.isfinite(st.taus)
    ax.plot(np.flatnonzero(ok) + 1, st.taus[ok], ".", ms=2, color="#4c72b0")
    window = max(5, len(st.taus) // 50)
    smooth = np.convolve(np.where(ok, st.taus, 0), np.ones(window), "same") / \
        np.maximum(np.convolve(ok.astype(float), np.ones(window), "same"), 1)
    ax.plot(np.arange(1, len(st.taus) + 1), smooth, "-", color="#dd8452", label=f"mean of {window}")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("event")
    ax.set_ylabel("Kendall tau with previous")
    ax.set_title(f"rank stability (mean tau {st.mean_tau:.3f}, p = {_fmt_p(st.p_value)})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "stability.png", dpi=110)
    plt.close(fig)
    r.image("stability.png", "Kendall tau between consecutive rankings")
  return r


def run_eda(source: str, out: str, *, on_invalid: str = "raise", bucket_size: int = 10,
            n_clusters: int = 5, n_sims: int = 200, seed: int = 0) -> dict:
  """Read `source`, explore it, write the report into `out`; returns the p-values."""
  from luce import data as ld
  start = time.perf_counter()
  table = ld.read(source, on_invalid=on_invalid)
  eda = ld.explore(table, bucket_size=bucket_size, n_clusters=n_clusters, n_sims=n_sims, seed=seed)
  out_dir = pathlib.Path(out)
  out_dir.mkdir(parents=True, exist_ok=True)
  report = write_report(table, eda, out_dir, source)
  (out_dir / "report.md").write_text(report.markdown())
  (out_dir / "report.html").write_text(report.html())
  p_values = eda.p_values()
  print(f"luce-eda: {source}: {eda.n_events} events, {eda.n_items} items, kind {eda.kind}, "
        f"k {eda.k if eda.k is not None else 'varies'} ({time.perf_counter() - start:.1f} s)")
  for name, p in p_values.items():
    print(f"  {name:<55s} p = {_fmt_p(p)}")
  print(f"  {eda.verdict(0.01)}")
  print(f"  report: {out_dir / 'report.md'}, {out_dir / 'report.html'}")
  return p_values


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.data or not FLAGS.out:
    raise app.UsageError("pass --data=SOURCE and --out=DIR")
  os.environ.setdefault("MPLBACKEND", "Agg")
  # A bad source or invalid data is a LuceError: one line, exit 2 (launch).
  run_eda(FLAGS.data, FLAGS.out, on_invalid=FLAGS.on_invalid, bucket_size=FLAGS.bucket_size,
          n_clusters=FLAGS.clusters, n_sims=FLAGS.sims, seed=FLAGS.seed)
  return 0


def run():
  launch(main, __name__)


if __name__ == "__main__":
  run()
