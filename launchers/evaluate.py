"""luce-eval: evaluate a trained run and every baseline on a split.

    luce-eval --workdir=/tmp/luce-sp500 --split=test

Loads the run's config.json and its best checkpoint (by validation NLL), rebuilds
the data (refusing it if its hash differs from the checkpoint's), and prints
NLL in nats per event (with a bootstrap 95% interval), hits@k and NDCG@k (ties
counted in expectation: uniform scores k²/n) for the model, uniform, frequency
PL, recency PL, static PL and, on synthetic data, the generating model
(`oracle`). Both model families: a diffusion run's NLL (sets, or rankings by
the ordered variant) is its exact subset recursion (or the MD4 bound for
k > 12, said in the table).
Writes the same to DIR/eval_SPLIT.json (`models.NAME.nll_per_event`).
"""

from __future__ import annotations

from absl import app, flags, logging
from luce.launchers._cli import launch

flags.DEFINE_string("workdir", None, "Folder of a luce-train run.")
flags.DEFINE_enum("split", "test", ["train", "valid", "test"], "Which split to evaluate.")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "best: by validation NLL; latest: the last saved.")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from luce.train import evaluate_run, format_table, load_run, use_compilation_cache, write_eval
  use_compilation_cache()
  run = load_run(FLAGS.workdir, checkpoint=FLAGS.checkpoint)
  results = evaluate_run(run, FLAGS.split)
  print(format_table(results, f"{FLAGS.split} ({run.checkpoint} checkpoint, step {run.step})",
                     run.config.data.eval_k, run.prepared.kind, run.family.nll_kind))
  out = write_eval(FLAGS.workdir, FLAGS.split, run.step, run.family, run.config, run.prepared.kind,
                   results, checkpoint=run.checkpoint)
  print(f"wrote {out}")


def run():
  launch(main, __name__)


if __name__ == "__main__":
  run()
