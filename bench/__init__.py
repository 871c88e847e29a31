"""bench: a benchmarking harness for parameter-efficient fine-tuning of CLIP.

Usage:
    $ bench run --methods clipfit,coop --shots 1,4,16
    >>> from bench.api import plan, run_cell

Heavy libraries (torch, open_clip, pandas) are imported lazily so that `bench --help`, `bench ls` and
`bench plan` stay fast.
"""

__version__ = "0.1.0"
