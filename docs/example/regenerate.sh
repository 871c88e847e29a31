#!/usr/bin/env bash
# Regenerate the example leaderboard in docs/example from a results tree:
#   LEADERBOARD.md, LEADERBOARD.html, plots/*.png and leaderboard.png (a headless-Chromium screenshot of the page).
#
#   bash docs/example/regenerate.sh RESULTS        # e.g. results/ after `make run` and the base-to-new run
#
# PYTHON picks the interpreter (default: .venv/bin/python, else python3); Chromium: tests/install_chromium.sh.
set -euo pipefail
RESULTS=${1:?usage: bash docs/example/regenerate.sh RESULTS}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-$( [[ -x "$ROOT/.venv/bin/python" ]] && echo "$ROOT/.venv/bin/python" || echo python3 )}
cd "$ROOT"
"$PY" -m bench leaderboard "$RESULTS" --html
cp "$RESULTS/LEADERBOARD.md" "$RESULTS/LEADERBOARD.html" "$HERE/"
mkdir -p "$HERE/plots"
cp "$RESULTS"/plots/*.png "$HERE/plots/"
"$PY" -m bench.report.browser screenshot "$HERE/LEADERBOARD.html" "$HERE/leaderboard.png" 1400 2200
echo "docs/example regenerated from $RESULTS (look at docs/example/leaderboard.png)"
