"""A small registry of named things (methods), lazy and typo-tolerant.

Usage:
    >>> METHODS = Registry("method")
    >>> METHODS.register_lazy("coop", "bench.methods.coop:CoOp")
    >>> cls = METHODS.get("coop")

Names are explicit strings, never `__name__`. A target is either an object or a lazy "module:attr" string that
is imported on first `get`, so `bench ls` can list methods without importing torch. Third-party packages add
methods through the `bench.methods` entry-point group.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any, Generic, TypeVar

from bench.errors import BenchError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self._targets: dict[str, Any] = {}
        self._group = entry_point_group
        self._entry_points_loaded = False

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

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._targets)

    def target(self, name: str) -> Any:
        """What `name` is registered as, without importing it: a lazy "module:attr" string or the object."""
        self._load_entry_points()
        if name not in self._targets:
            raise did_you_mean(self.kind, name, self._targets)
        return self._targets[name]

    def get(self, name: str) -> T:
        self._load_entry_points()
        if name not in self._targets:
            raise did_you_mean(self.kind, name, self._targets)
        target = self._targets[name]
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module), attr)
            self._targets[name] = target
        return target

    def origin(self, name: str) -> str:
        self.get(name)
        return _origin(self._targets[name])

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
