"""luce-bench: run benchmarks from the suite in benchmarks/.

    luce-bench --list
    luce-bench --bench=pl_log_prob
    luce-bench --bench=pl_log_prob,topk_sample -- --shapes=256x1024x1024

Each benchmark runs as `python -m benchmarks.NAME [args after --]` in its own
process, from the checkout that holds this package (benchmarks/ is not part of
an installed wheel: use an editable install, `pip install -e .`), with its
output streamed. A benchmark prints its Markdown tables and writes
benchmarks/out/NAME.json; recorded results go to benchmarks/RESULTS.md by hand,
with the command, machine and date. The exit status is the first non-zero
status of the benchmarks run, so a failed benchmark fails the command.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

from absl import app, flags

from luce.errors import ConfigError
from luce.launchers._cli import launch

flags.DEFINE_list("bench", [], "Benchmarks to run (names from --list), or 'all'.")
flags.DEFINE_bool("list", False, "List the benchmarks with their one-line descriptions and exit.")
FLAGS = flags.FLAGS


def suite_dir() -> pathlib.Path:
  """benchmarks/ of the checkout this package was installed from."""
  here = pathlib.Path(__file__).resolve()
  for root in here.parents:
    candidate = root / "benchmarks"
    if (candidate / "_timing.py").is_file():
      return candidate
  raise ConfigError(
      f"no benchmarks/ folder above {here}: luce-bench needs the source checkout "
      "(pip install -e . from the repository).")


def available(folder: pathlib.Path) -> dict[str, str]:
  """name -> first docstring line, for every benchmark module in `folder`."""
  out = {}
  for path in sorted(folder.glob("*.py")):
    if path.name.startswith("_"):
      continue
    text = path.read_text(encoding="utf-8")
    first = ""
    if text.startswith('"""'):
      first = text[3:].split("\n", 1)[0].strip().rstrip('"')
    out[path.stem] = first
  return out


def main(argv):
  folder = suite_dir()
  names = available(folder)
  if FLAGS.list:
    width = max(map(len, names))
    for name, line in names.items():
      print(f"{name:<{width}}  {line}")
    return 0
  chosen = list(names) if FLAGS.bench == ["all"] else FLAGS.bench
  if not chosen:
    raise app.UsageError("pass --bench=NAME[,NAME...] (or --bench=all); --list shows the names.")
  unknown = [name for name in chosen if name not in names]
  if unknown:
    raise ConfigError(f"--bench: unknown benchmark(s) {unknown}; known: {sorted(names)}.")
  extra = argv[1:]
  status = 0
  for name in chosen:
    print(f"== luce-bench {name} {' '.join(extra)}", flush=True)
    start = time.perf_counter()
    code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *extra],
                           cwd=folder.parent)
    print(f"== {name}: exit {code} after {time.perf_counter() - start:.1f} s", flush=True)
    status = status or code
  return status


def run():
  launch(main, __name__)


if __name__ == "__main__":
  run()
