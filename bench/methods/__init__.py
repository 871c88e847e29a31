"""Method registry: a method is one file in this package plus a card naming it (`implementation: module:Class`).

Usage:
    >>> from bench.methods import METHODS, build_method
    >>> METHODS.names()[:4]
    ['bitfit', 'clip_adapter', 'clipfit', 'clipfit_all_bias']

The registry is the method cards (methods/*.yaml, BENCH_CARDS_PATH) that name their implementation, so a preset of
an existing class (the ClipFit ablations, BitFit: `bench.methods.selective:SelectiveTuning`) is a card only; a card
that `extends` another inherits its implementation. Third-party packages may instead register a class through the
`bench.methods` entry-point group (`name = "package.module:Class"`, a subclass of `bench.methods.base.Method`) and
add a card without `implementation`. Nothing here imports a method module (or torch) until `get`/`build_method`.
"""

from __future__ import annotations

from bench import cards, settings
from bench.errors import BenchError
from bench.registry import Registry


def card_implementations() -> dict[str, str]:
    """name → "module:Class" for every method card that names its implementation (a card that does not load is
    left out here; `bench validate` reports it)."""
    found = {}
    for name in cards.method_names():
        try:
            implementation = cards.method_card(name).implementation
        except BenchError:
            continue
        if implementation:
            found[name] = implementation
    return found


METHODS: Registry = Registry("method", entry_point_group="bench.methods", discover=card_implementations)


def method_fields(method: str) -> dict[str, settings.Field] | None:
    """name → Field of a registered method's Params, read without importing it (bench.settings), or None when
    the method is unknown or its source cannot be read statically."""
    try:
        target = METHODS.target(method)
    except BenchError:
        return None
    return settings.target_fields(target, owner=method)


def build_method(name: str, backbone, classnames: list[str], template: str, params: dict, dataset: str = "",
                 truncate_text: bool = True):
    """Instantiate a registered method on a fresh copy of the backbone's model (`truncate_text`: encode prompts
    only up to their end-of-text token, exact under the causal mask; off on the slow path)."""
    from bench.methods.base import Method

    cls = METHODS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"method '{name}' resolves to {cls!r}, which is not a bench.methods.base.Method")
    return cls(backbone, classnames, template, params, dataset=dataset, truncate_text=truncate_text)
