"""Check settings against their declared type and range before any cell runs (no torch).

Usage:
    >>> from bench.settings import Field, coerce
    >>> coerce(Field("lr", "float", "(0, inf)"), "1e-4", "--set")          # YAML 1.1 reads 1e-4 as a string
    0.0001
    >>> coerce(Field("batch_size", "int", "[1, inf)"), 0, "--set")
    BenchError: --set: batch_size=0 is out of range; batch_size takes an integer ≥ 1

A Field is a name, the annotation text of a dataclass field (`int | None`, `tuple[float, float]`, `str | bool`:
under PEP 563 annotations are strings, so they are read, never evaluated) and an optional limit: an interval
("[1, inf)", "(0, 1]", "(0, 1] ascending" for an ordered pair) or a list of allowed values. A method's fields come
from its `Params` dataclass, read from the method's source with `ast`, and its module-level `LIMITS`, so `bench
plan` checks `--set lam=abc` without importing torch; TrainConfig's come from `dataclasses.fields` and
`bench.config.LIMITS`. Any new dataclass field is type-checked by default.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError

_INTERVAL = re.compile(r"^([\[(])\s*(-?[\d.e+-]+|-inf)\s*,\s*(-?[\d.e+-]+|inf)\s*([\])])(\s+ascending)?$")
_SCALARS = {"int", "float", "bool", "str", "dict", "list", "tuple", "None", "Any"}


@dataclass(frozen=True)
class Field:
    name: str
    type: str = "Any"          # annotation text
    limit: Any = None          # interval string or list of allowed values
    owner: str = ""            # shown in messages: "clipfit's lam"

    @property
    def label(self) -> str:
        return f"{self.owner}'s {self.name}" if self.owner else self.name


class _Mismatch(Exception):
    pass


def _split_top(text: str, sep: str) -> list[str]:
    """Split at `sep` outside brackets: "tuple[float, float] | None" → ["tuple[float, float]", "None"]."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == sep and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return parts + [cur.strip()]


def _members(annotation: str) -> list[str]:
    """The members of a union annotation; anything this module does not know is "Any" (accepted as given)."""
    text = annotation.replace("typing.", "").strip().strip("'\"")
    m = re.fullmatch(r"Optional\[(.*)\]", text)
    if m:
        return _members(m.group(1)) + ["None"]
    out = []
    for part in _split_top(text, "|"):
        part = re.sub(r"^(List|Tuple|Dict)\b", lambda g: g.group(1).lower(), part)
        out.append(part if part.split("[", 1)[0] in _SCALARS else "Any")
    return out


def _args(member: str) -> list[str]:
    return _split_top(member[member.index("[") + 1:-1], ",") if "[" in member else []


def _number(value: Any, integer: bool) -> int | float:
    if isinstance(value, bool):
        raise _Mismatch
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise _Mismatch from None
    if not isinstance(value, (int, float)) or math.isnan(value):
        raise _Mismatch
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise _Mismatch
        return int(value)
    return float(value)


def _convert(value: Any, member: str) -> Any:
    base = member.split("[", 1)[0].lower()
    if base == "any":
        return value
    if base == "none":
        if value is None:
            return None
        raise _Mismatch
    if value is None:
        raise _Mismatch
    if base in ("int", "float"):
        return _number(value, base == "int")
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise _Mismatch
    if base == "str":
        if isinstance(value, str):
            return value
        raise _Mismatch
    if base == "dict":
        if isinstance(value, dict):
            return value
        raise _Mismatch
    if not isinstance(value, (list, tuple)):                  # list / tuple
        raise _Mismatch
    args = _args(member)
    if base == "tuple" and args and args[-1] != "...":
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_convert(v, a) for v, a in zip(value, args))
    inner = args[0] if args else "Any"
    items = [_convert(v, inner) for v in value]
    return tuple(items) if base == "tuple" and args else items


def _exact(value: Any, member: str) -> bool:
    """Already of this member's type (so `str | bool` keeps "auto" and True as they are)."""
    base = member.split("[", 1)[0].lower()
    kinds = {"int": int, "float": float, "bool": bool, "str": str, "dict": dict}
    if base == "none":
        return value is None
    return base in kinds and type(value) is kinds[base]


def _interval(limit: str):
    m = _INTERVAL.match(limit.strip())
    if not m:
        raise ValueError(f"bad interval {limit!r}")
    return m.group(1) == "[", float(m.group(2)), float(m.group(3)), m.group(4) == "]", bool(m.group(5))


def _fits(x: Any, limit: Any) -> bool:
    if isinstance(limit, (list, tuple)):
        return any(x == c and type(x) is type(c) for c in limit)
    lo_closed, lo, hi, hi_closed, _ = _interval(limit)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    return (lo <= x if lo_closed else lo < x) and (x <= hi if hi_closed else x < hi)


def _within(value: Any, limit: Any) -> bool:
    if limit is None or value is None:
        return True
    if isinstance(value, (list, tuple)):
        if not all(_fits(v, limit) for v in value):
            return False
        return not (isinstance(limit, str) and _interval(limit)[4]) or list(value) == sorted(value)
    return _fits(value, limit)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def describe_limit(limit: Any) -> str:
    if isinstance(limit, (list, tuple)):
        return "one of " + ", ".join("true" if c is True else "false" if c is False else str(c) for c in limit)
    lo_closed, lo, hi, hi_closed, ascending = _interval(limit)
    if math.isinf(hi):
        text = f"{'≥' if lo_closed else '>'} {_fmt(lo)}"
    else:
        text = f"in {'[' if lo_closed else '('}{_fmt(lo)}, {_fmt(hi)}{']' if hi_closed else ')'}"
    return text + (", ascending" if ascending else "")


def describe(field: Field, with_null: bool = True) -> str:
    """What fits, in words: "an integer ≥ 1, or null", "one of sgd, adamw", "a pair of numbers [lo, hi] ..."."""
    words = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
             "dict": "a mapping", "list": "a list", "tuple": "a list"}
    kinds, sequence = [], False
    for member in _members(field.type):
        base, args = member.split("[", 1)[0].lower(), _args(member)
        sequence = sequence or base in ("list", "tuple")
        if base == "tuple" and len(args) == 2 and args[-1] != "...":
            kinds.append("a pair of numbers" if set(args) <= {"float", "int"} else "a pair")
        elif base not in ("none", "any"):
            kinds.append(words[base])
    text = " or ".join(kinds) or "any value"
    limit = field.limit
    if isinstance(limit, (list, tuple)):
        text = ("a list drawn from " + describe_limit(limit)[len("one of "):]) if sequence else describe_limit(limit)
    elif limit is not None:
        ascending = _interval(limit)[4]
        bound = describe_limit(limit).replace(", ascending", "")
        if sequence and ascending:
            text += f" [lo, hi], each {bound}, with lo ≤ hi"
        elif sequence:
            text += f", each {bound}"
        else:
            text += f" {bound}"
    nullable = "None" in _members(field.type)
    return text + (", or null" if with_null and nullable else "")


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    return str(list(value) if isinstance(value, tuple) else value).replace("True", "true").replace("False", "false")


def coerce(field: Field, value: Any, source: str) -> Any:
    """`value` converted to the field's type and checked against its limit, or a one-line BenchError."""
    members = _members(field.type)
    out, converted = None, False
    for member in members:                              # a value already of a member type stays as it is
        if _exact(value, member):
            out, converted = (float(value) if member == "float" else value), True
            break
    if not converted:
        for member in members:
            try:
                out, converted = _convert(value, member), True
                break
            except _Mismatch:
                continue
    if not converted:
        problem = "is not allowed" if value is None else f"is not {describe(Field(field.name, field.type), False)}"
        raise BenchError(f"{source}: {field.name}={_show(value)} {problem}; {field.label} takes {describe(field)}")
    if not _within(out, field.limit):
        problem = "is not allowed" if isinstance(field.limit, (list, tuple)) else "is out of range"
        raise BenchError(f"{source}: {field.name}={_show(value)} {problem}; {field.label} takes {describe(field)}")
    return out


def dataclass_fields(cls, limits: dict[str, Any] | None = None, owner: str = "") -> dict[str, Field]:
    """Fields of a dataclass (its annotation text) with their limits."""
    limits = limits or {}
    return {f.name: Field(f.name, f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "Any"),
                          limits.get(f.name), owner) for f in dataclasses.fields(cls)}


def check_mapping(fields: dict[str, Field], raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Every known key of `raw` coerced (unknown keys are the caller's to report)."""
    return {k: coerce(fields[k], v, source) if k in fields else v for k, v in raw.items()}


# ---- a method's parameters, read from its source (importing a method imports torch) ----

@functools.cache
def target_fields(target: Any, owner: str) -> dict[str, Field] | None:
    """name → Field for the Params of a method class given as "module:Class" (read from the source with `ast`) or
    as the class itself, or None when its source cannot be read statically (bench.methods.method_fields)."""
    if not isinstance(target, str):             # already imported (a cell process): read the class itself
        params = getattr(target, "Params", None)
        if params is None or not dataclasses.is_dataclass(params):
            return None
        import sys

        limits = getattr(sys.modules.get(target.__module__), "LIMITS", None) or {}
        return dataclass_fields(params, limits, owner=owner)
    module, _, attr = target.partition(":")
    try:
        spec = importlib.util.find_spec(module)
        source = Path(spec.origin).read_text(encoding="utf-8") if spec and spec.origin else None
    except (ImportError, OSError, ValueError):
        return None
    return _fields_from_source(source, attr, owner) if source else None


def _fields_from_source(source: str, attr: str, owner: str) -> dict[str, Field] | None:
    tree = ast.parse(source)
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    limits: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "LIMITS" for t in node.targets):
            limits = ast.literal_eval(node.value)
    params_name, cls, seen = None, classes.get(attr), set()
    while cls is not None and params_name is None and cls.name not in seen:
        seen.add(cls.name)
        for stmt in cls.body:
            if (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Name)
                    and any(isinstance(t, ast.Name) and t.id == "Params" for t in stmt.targets)):
                params_name = stmt.value.id
        bases = [b.id for b in cls.bases if isinstance(b, ast.Name)]
        if params_name is None and bases == ["Method"]:
            return {}                            # the base class's NoParams
        cls = classes.get(bases[0]) if params_name is None and bases else None
    pcls = classes.get(params_name or "")
    if pcls is None:
        return None
    out = {}
    for stmt in pcls.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            annotation = ast.unparse(stmt.annotation)
            if "ClassVar" not in annotation:
                out[stmt.target.id] = Field(stmt.target.id, annotation, limits.get(stmt.target.id), owner)
    return out


def fields_from_values(values: dict[str, Any], owner: str = "") -> dict[str, Field]:
    """Fallback for a method whose source cannot be read (a card without code): types from the card's values."""
    kinds = {bool: "bool", int: "int | float", float: "float", str: "str", list: "list", dict: "dict"}
    return {k: Field(k, kinds.get(type(v), "Any"), None, owner) for k, v in values.items()}
