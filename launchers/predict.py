"""luce-predict: batch predictions of a trained run, written to Parquet.

    luce-predict --workdir=/tmp/luce-f1 --split=test --samples=10 --out=/tmp/f1-test.parquet

For every event of the split, one row: `event_id`, `time`, `inclusion_prob`
(float32[n]: each item's probability of being in the top k, a Monte Carlo
estimate from --draws Gumbel-top-k lists), `top_k` (int32[k]: the k available
items with the highest scores, best first), `top_k_labels` (their catalog
labels: ball "39", not id 38), `samples` (S lists of k items drawn from the
model, each a valid top-k of the event's available items) and `scores`
(float32[n]; -inf for items the event does not have). Item ids are catalog
ids: id i is the schema metadata's `luce.catalog_labels[i]`. k is --k, default
the config's data.eval_k. The file's schema metadata says what each column is
and records the catalog, the luce version, the checkpoint and step, the data
hash and the run's config. Prints the file written and the mean
hits@k of the model's scores beside every baseline's (ties counted in
expectation, the numbers luce-eval prints).

For a diffusion run (model.family=diffusion) the samples and the draws behind
`inclusion_prob` are sets from its exact sampler, k is the model's set size,
and `scores` are the denoiser's first-pick logits. On rankings they are the
top k of rankings from the exact ordered sampler (any k up to the longest
list), and `scores` are its rank-0 logits with nothing visible.
"""

from __future__ import annotations

import pathlib

from absl import app, flags, logging
from luce.launchers._cli import launch

flags.DEFINE_string("workdir", None, "Folder of a luce-train run.")
flags.DEFINE_enum("split", "test", ["train", "valid", "test"], "Which split's events to predict.")
flags.DEFINE_integer("samples", 10, "Sampled top-k lists per event (S).")
flags.DEFINE_integer("draws", 2000, "Gumbel-top-k draws per event behind inclusion_prob.")
flags.DEFINE_integer("k", None, "Length of top_k and of each sample (default data.eval_k).")
flags.DEFINE_integer("seed", 0, "Seed of the samples.")
flags.DEFINE_string("out", None, "Parquet file to write.")
flags.mark_flags_as_required(["workdir", "out"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  import pyarrow.parquet as pq

  from luce.train import load_run, predict, use_compilation_cache
  use_compilation_cache()
  run = load_run(FLAGS.workdir)
  k = FLAGS.k or run.config.data.eval_k
  table, hits = predict(run, FLAGS.split, samples=FLAGS.samples, draws=FLAGS.draws, k=k,
                        seed=FLAGS.seed)
  out = pathlib.Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(table, out)
  print(f"wrote {out}: {table.num_rows} events of {FLAGS.split}, top-{k} lists and {FLAGS.samples} "
        f"samples each")
  print(f"mean hits@{k} (ties in expectation): " +
        ", ".join(f"{name} {value:.3f}" for name, value in hits.items()))


def run():
  launch(main, __name__)


if __name__ == "__main__":
  run()
