"""The mini world's reference hashes (reference.json, quoted in the README) and the comparison behind
`bench world --check`.

Usage:
    >>> from bench.mini.world import ensure_world
    >>> from bench.mini.reference import check, report
    >>> c = check(ensure_world().root, seed=0, config=BuildConfig())
    >>> c.ok, c.rows[0]                           # (component, built hash, reference hash or None)
    >>> print("\n".join(report(c)))

A world is the reference one when every component's content hash equals the reference: the inputs bench reads
(scikit-learn's digits, the decoded photographs), the corpus, the pretrained weights (tensor contents, not the
file) and each dataset folder (PNG bytes and split JSON). reference.json is keyed by the world folder's name
(`world-v<version>-seed<seed>[-<config tag>]`), so a version bump needs new reference hashes
(`bench world --check` prints the built ones; `python benchmarks/mini_world_build.py --cache DIR` too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError

REFERENCE_FILE = Path(__file__).resolve().parent / "reference.json"


def load_reference(path: Path = REFERENCE_FILE) -> dict[str, dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))["worlds"]
    except (OSError, ValueError, KeyError) as err:
        raise BenchError(f"cannot read the mini world's reference hashes {path}: {err.__class__.__name__}") from None


@dataclass(frozen=True)
class Check:
    root: Path
    rows: list[tuple[str, str, str | None]]     # (component, built hash, reference hash or None)
    manifest: dict

    @property
    def ok(self) -> bool:
        return all(built == want for _, built, want in self.rows)


def check(root: Path, seed: int, config, reference: dict[str, dict] | None = None) -> Check:
    """Compare the world built at `root` (re-verified against its own manifest first) with its reference entry."""
    from bench.mini.world import MANIFEST, verify

    world, reason = verify(root, seed, config, full=True)
    if world is None:
        raise BenchError(f"the mini world at {root} is not complete and intact ({reason}); run `bench world`")
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    content = manifest.get("content", {})
    refs = load_reference() if reference is None else reference
    if root.name not in refs:
        raise BenchError(f"bench has no reference hashes for {root.name} (it has: {', '.join(sorted(refs))})")
    ref = refs[root.name]["content"]
    rows = [(k, content.get(k, "missing"), ref.get(k)) for k in sorted(set(content) | set(ref), key=_order)]
    return Check(root, rows, manifest)


def _order(component: str) -> tuple[int, str]:
    kinds = ("inputs/", "corpus", "weights", "data/")
    return next(i for i, k in enumerate(kinds + ("",)) if component.startswith(k)), component


def report(c: Check) -> list[str]:
    """The lines `bench world --check` prints: one per component, then a verdict."""
    width = max(len(k) for k, _, _ in c.rows)
    lines = [f"mini world {c.root}: content hashes against bench's reference ({REFERENCE_FILE.name})"]
    for k, built, want in c.rows:
        verdict = "match" if built == want else f"DIFFERS (reference {(want or 'none')[:16]})"
        lines.append(f"  {k:{width}s}  {built[:16]}  {verdict}")
    if c.ok:
        lines.append("the world is the reference one: the README's mini-world numbers apply")
    else:
        bad = sum(built != want for _, built, want in c.rows)
        versions = ", ".join(f"{k} {v}" for k, v in c.manifest.get("versions", {}).items())
        kernels = c.manifest.get("numerics", {}).get("cpu_capability", "?")
        lines.append(f"{bad} of {len(c.rows)} components differ from the reference. Built with {versions}; torch CPU "
                     f"kernels {kernels}. The reference needs constraints.txt's versions on x86-64 with AVX2")
    return lines
