"""SLURM profiles: named YAML files of SlurmOptions, shipped in the package and in user folders (no submitit).

Usage:
    >>> opts = slurm_options("local", partition="debug")     # profile values, then flags
    $ bench run --executor slurm --profile gpu-cluster        # a name ...
    $ bench run --executor slurm --profile ./my-cluster.yaml  # ... or a path to a YAML file

A name is looked up in the folders of BENCH_PROFILES_PATH (os.pathsep-separated), then in
$XDG_CONFIG_HOME/bench/profiles (default ~/.config/bench/profiles), then among the profiles shipped with bench:
`bench/_profiles` inside an installed wheel, `slurm/profiles` in a source checkout. Values are type- and
range-checked like every other setting (bench.settings).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bench import settings
from bench.cards import load_yaml
from bench.errors import BenchError

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_DIRS = [PACKAGE_DIR / "_profiles", PACKAGE_DIR.parent / "slurm" / "profiles"]   # wheel, checkout


@dataclass
class SlurmOptions:
    partition: str | None = None
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: float = 32
    timeout_min: int = 240
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = 64
    setup: list[str] = field(default_factory=list)      # shell lines before the task (module load, venv, ...)
    cells_per_job: int = 1
    cells_per_gpu: int = 1                              # cells of a task run at once on its GPU (as memory allows)
    max_array_size: int | None = None                   # None: read MaxArraySize from scontrol
    max_num_timeout: int = 3                            # requeues after a time-out
    signal_delay_s: int = 120


LIMITS = {"gpus_per_node": "[0, inf)", "cpus_per_task": "[1, inf)", "mem_gb": "(0, inf)", "timeout_min": "[1, inf)",
          "array_parallelism": "[1, inf)", "cells_per_job": "[1, inf)", "cells_per_gpu": "[1, inf)",
          "max_array_size": "[1, inf)", "max_num_timeout": "[0, inf)", "signal_delay_s": "[0, inf)"}
FIELDS = settings.dataclass_fields(SlurmOptions, LIMITS)


def profile_dirs() -> list[Path]:
    """Folders searched for a profile name, user folders first."""
    user = [Path(p) for p in os.environ.get("BENCH_PROFILES_PATH", "").split(os.pathsep) if p]
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    shipped = next((d for d in SHIPPED_DIRS if d.is_dir()), None)
    return [d for d in [*user, config_home / "bench" / "profiles", shipped] if d is not None and d.is_dir()]


def find_profile(name_or_path: str) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if os.sep in name_or_path or name_or_path.endswith((".yaml", ".yml")):
        raise BenchError(f"SLURM profile file {path} does not exist")
    for folder in profile_dirs():
        if (folder / f"{name_or_path}.yaml").is_file():
            return folder / f"{name_or_path}.yaml"
    names = sorted({p.stem for d in profile_dirs() for p in d.glob("*.yaml")})
    raise BenchError(f"SLURM profile '{name_or_path}' not found in {', '.join(map(str, profile_dirs())) or 'any folder'};"
                     f" available: {', '.join(names) or 'none'} (or pass a YAML path)")


def load_profile(name_or_path: str) -> dict:
    """A profile's settings, each checked against SlurmOptions."""
    path = find_profile(name_or_path)
    raw = load_yaml(path) or {}
    if not isinstance(raw, dict):
        raise BenchError(f"SLURM profile {path} must be a YAML mapping of options, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise BenchError(f"SLURM profile {path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(FIELDS))}")
    return settings.check_mapping(FIELDS, raw, f"SLURM profile {path}")


def slurm_options(profile: str | None, **flags) -> SlurmOptions:
    """The profile's options overridden by the flags that were given (None = not given)."""
    raw = load_profile(profile) if profile else {}
    given = {k: v for k, v in flags.items() if v is not None}
    raw.update(settings.check_mapping(FIELDS, given, "SLURM flags"))
    return SlurmOptions(**raw)
