"""luce-eval: evaluate a trained run and every baseline on a split.

    luce-eval --workdir=/tmp/luce-sp500 --split=test

Loads the run's config.json and its best checkpoint (by validation NLL), rebuilds
the data (refusing it if its hash differs from the checkpoint's), and prints
NLL in nats per event, hits@k and NDCG@k for the model, uniform, frequency PL,
recency PL, static PL and, on synthetic data, the generating model (`oracle`).
Writes the same to DIR/eval_SPLIT.json (`models.NAME.nll_per_event`).
"""

from __future__ import annotations

import json
import pathlib

from absl import app, flags, logging

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
  from luce.train import evaluate_run, format_table, load_run
  run = load_run(FLAGS.workdir, checkpoint=FLAGS.checkpoint)
  results = evaluate_run(run, FLAGS.split)
  print(format_table(results, f"{FLAGS.split} ({run.checkpoint} checkpoint, step {run.step})",
                     run.config.data.eval_k, run.prepared.kind))
  out = pathlib.Path(FLAGS.workdir) / f"eval_{FLAGS.split}.json"
  out.write_text(json.dumps({"split": FLAGS.split, "step": run.step, "checkpoint": run.checkpoint,
                             "source": run.config.data.source, "kind": run.prepared.kind,
                             "nll": "exact", "models": results}, indent=2) + "\n")
  print(f"wrote {out}")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
