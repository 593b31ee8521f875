#!/usr/bin/env bash
# Build luce's documentation with warnings as errors: docs/_build/html.
#
#   pip install -r docs/requirements.txt   # once, in the environment that has luce
#   bash docs/build.sh                      # from anywhere; uses the active python
#
# Generates the API pages (autosummary) and the launcher pages (docs/_ext),
# and executes the four tutorials (docs/tutorials/*.py), which read
# $LUCE_SHARED_DATA (default ../shared/data from the repository root).
# Extra arguments go to sphinx-build (e.g. -E for a full rebuild).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python}"
export LUCE_SHARED_DATA="${LUCE_SHARED_DATA:-$root/../shared/data}"
export LUCE_TUTORIAL_OUT="${LUCE_TUTORIAL_OUT:-$root/docs/_build/tutorial_files}"
# One CPU device and no GPU probing in the tutorial kernels and their launchers.
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"

if [ ! -d "$LUCE_SHARED_DATA" ]; then
  echo "docs/build.sh: the tutorials need the shared data, but LUCE_SHARED_DATA=$LUCE_SHARED_DATA is not a folder" >&2
  exit 2
fi

"$python" -m sphinx -W --keep-going -j auto -b html "$@" docs docs/_build/html
echo "docs/build.sh: built $root/docs/_build/html/index.html"
