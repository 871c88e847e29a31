"""A small registry of named things (methods), lazy and typo-tolerant.

Usage:
    >>> METHODS = Registry("method")
    >>> METHODS.register_lazy("coop", "bench.methods.coop:CoOp")
    >>> cls = METHODS.get("coop")

Names are explicit strings, never `__name__`. A target is either an object or a lazy "module:attr" string that
is imported on first `get`, so `bench ls` can list methods without importing torch. Besides what is registered in
code, a registry can `discover` name → "module:attr" pairs on every look-up (the methods registry: the method cards
that name their implementation), and third-party packages add methods through the `bench.methods` entry-point
group. One name with two different targets is an error.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import metadata
from typing import Any, Generic, TypeVar

from bench.errors import BenchError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None,
                 discover: Callable[[], dict[str, str]] | None = None) -> None:
        self.kind = kind
        self._targets: dict[str, Any] = {}
        self._group = entry_point_group
        self._entry_points_loaded = False
        self._discover = discover          # asked on every look-up, so cards written later are seen

    def register_lazy(self, name: str, target: str) -> None:
        """Register `name` → "module:attr", imported on first use."""
        self._add(name, target)

    def register(self, name: str):
        """Decorator: `@METHODS.register("coop")`."""

        def deco(obj: T) -> T:
            self._add(name, obj)
            return obj

        return deco

    def _add(self, name: str, target: Any) -> None:
        old = self._targets.get(name)
        if old is not None and _origin(old) != _origin(target):
            raise BenchError(f"{self.kind} '{name}' is registered twice: {_origin(old)} and {_origin(target)}")
        self._targets[name] = target

    def _all(self) -> dict[str, Any]:
        """Registered, entry-point and discovered targets by name."""
        self._load_entry_points()
        if self._discover is None:
            return self._targets
        found = dict(self._targets)
        for name, target in self._discover().items():
            old = found.setdefault(name, target)
            if _origin(old) != _origin(target):
                raise BenchError(f"{self.kind} '{name}' is registered twice: {_origin(old)} and {_origin(target)}")
        return found

    def names(self) -> list[str]:
        return sorted(self._all())

    def target(self, name: str) -> Any:
        """What `name` is registered as, without importing it: a lazy "module:attr" string or the object."""
        targets = self._all()
        if name not in targets:
            raise did_you_mean(self.kind, name, targets)
        return targets[name]

    def get(self, name: str) -> T:
        target = self.target(name)
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module), attr)
            if name in self._targets:                # registered in code: keep the import
                self._targets[name] = target
        return target

    def origin(self, name: str) -> str:
        return _origin(self.get(name))

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or not self._group:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self._group):
            if ep.name not in self._targets:
                self._targets[ep.name] = ep.value

    def _clear(self) -> None:
        """For tests: forget everything registered."""
        self._targets.clear()
        self._entry_points_loaded = False


def _origin(target: Any) -> str:
    if isinstance(target, str):
        return target
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', repr(target))}"
