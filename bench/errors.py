"""User-facing errors: one line that names the culprit and the fix; the CLI prints them without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(Exception):
    """An error caused by user input (a name, a path, a file); its message is one self-contained line."""


def did_you_mean(kind: str, name: str, choices: Iterable[str]) -> BenchError:
    """Build the standard 'unknown X' error with close matches and the full list of valid names."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else "."
    listing = ", ".join(choices) if len(choices) <= 40 else f"{len(choices)} (see bench ls {kind}s)"
    return BenchError(f"{kind} '{name}' is unknown{hint} Available: {listing}")
