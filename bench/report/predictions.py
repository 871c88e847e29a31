"""Per-image predictions of completed cells, read back from their `predictions.npz` (written by bench.cell).

Usage:
    >>> from bench.report.collect import load_results
    >>> from bench.report.predictions import per_image_frame, load_correct
    >>> res = load_results("results")
    >>> per_image_frame(res.frame)          # one row per (cell, evaluation, test image): label, pred, correct, p_true
    >>> load_correct(res.frame)             # (cell_id, eval) → (bool right/wrong per image, hash of the labels)

The npz holds, per evaluation E of the cell, `E/label` (int32, N), `E/top5` (int32, N×k, class ids by logit:
`E/top5[:, 0]` is the prediction), `E/top5_logit` (float16) and `E/p_true` (float16, softmax probability of the
true class). Images are in the test split's order, the same for every method, seed and K of a dataset and
protocol, so two cells can be compared image by image. Only the members needed are decompressed (a minimal
reader for the plain zip numpy writes, zipfile otherwise; numpy's plain .npy headers are parsed directly). A
missing or unreadable file is skipped and counted (older results have none): those cells fall back to unpaired
statistics.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import struct
import zipfile
import zlib
from typing import Any

import numpy as np
import pandas as pd

from bench.report.collect import completed

logger = logging.getLogger(__name__)

KEYS = ["cell_id", "backbone", "pretrained", "protocol", "method", "dataset", "shots", "seed"]
PER_IMAGE_COLUMNS = KEYS + ["eval", "image", "label", "pred", "correct", "p_true"]


_NPY_HEADER = re.compile(rb"\{'descr': '([<>|]?[biuf][1248])', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \}")


def _npy(buf: bytes) -> np.ndarray:
    """An array from .npy bytes: the plain numeric headers numpy writes are parsed directly (much faster than
    np.lib.format's literal_eval); anything else goes through numpy's reader, pickles refused."""
    if buf[:6] == b"\x93NUMPY" and buf[6] in (1, 2, 3):
        size, start = (struct.unpack_from("<H", buf, 8)[0], 10) if buf[6] == 1 else (struct.unpack_from("<I", buf, 8)[0], 12)
        m = _NPY_HEADER.match(buf, start, start + size)
        if m:
            shape = tuple(int(x) for x in m.group(2).split(b",") if x.strip())
            return np.frombuffer(buf, dtype=np.dtype(m.group(1).decode()), offset=start + size).reshape(shape)
    return np.lib.format.read_array(io.BytesIO(buf), allow_pickle=False)


def _members(data: bytes) -> dict[str, tuple[int, int, int, int]] | None:
    """name → (method, local header offset, compressed size, size) from a plain zip's central directory, or None
    when the archive is anything else (zip64, multi-disk, a comment-shifted end record...): zipfile then reads it."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if end < 0 or len(data) < end + 22:
        return None
    disk, _, _, count, cd_size, cd_off = struct.unpack_from("<HHHHII", data, end + 4)
    if disk or cd_off == 0xFFFFFFFF or count == 0xFFFF or cd_off + cd_size > end:
        return None
    out, pos = {}, cd_off
    for _ in range(count):
        if data[pos:pos + 4] != b"PK\x01\x02":
            return None
        flags, method = struct.unpack_from("<HH", data, pos + 8)
        csize, size, nlen, xlen, clen = struct.unpack_from("<IIHHH", data, pos + 20)
        offset = struct.unpack_from("<I", data, pos + 42)[0]
        if flags & 1 or method not in (0, 8) or 0xFFFFFFFF in (csize, size, offset):
            return None
        out[data[pos + 46:pos + 46 + nlen].decode("utf-8", "replace")] = (method, offset, csize, size)
        pos += 46 + nlen + xlen + clen
    return out


def _member(data: bytes, info: tuple[int, int, int, int]) -> bytes:
    method, offset, csize, size = info
    if data[offset:offset + 4] != b"PK\x03\x04":
        raise ValueError("bad local header in predictions.npz")
    nlen, xlen = struct.unpack_from("<HH", data, offset + 26)
    start = offset + 30 + nlen + xlen
    raw = data[start:start + csize]
    out = zlib.decompress(raw, -15) if method == 8 else raw
    if len(out) != size:
        raise ValueError("truncated member in predictions.npz")
    return out


def read_predictions(path: str, evals: list[str] | None = None,
                     fields: tuple[str, ...] = ("label", "top5")) -> dict[str, dict[str, np.ndarray]]:
    """`{eval: {field: array}}` for the requested evaluations (default: all in the file) and fields."""
    with open(path, "rb") as fh:
        data = fh.read()
    members = _members(data)
    if members is None:                                      # not a plain zip: the standard library reads it
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = {n: n for n in z.namelist()}
            blobs = {n: z.read(n) for n in members if n.endswith(".npy")}
        read = blobs.__getitem__
    else:
        def read(name: str) -> bytes:
            return _member(data, members[name])
    names = {n[:-4] for n in members if n.endswith(".npy")}
    out: dict[str, dict[str, np.ndarray]] = {}
    for e in (evals if evals is not None else sorted({n.rsplit("/", 1)[0] for n in names if "/" in n})):
        if all(f"{e}/{f}" in names for f in fields):
            out[e] = {f: _npy(read(f"{e}/{f}.npy")) for f in fields}
    return out


def labels_digest(label: np.ndarray) -> str:
    """A short hash of a label array: equal hashes = the same test images in the same order (for pairing)."""
    return hashlib.blake2b(np.ascontiguousarray(label, dtype=np.int32).tobytes(), digest_size=8).hexdigest()


def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Completed rows grouped by cell: cell keys, predictions path and the list of evaluations."""
    done = completed(frame)
    if done.empty:
        return pd.DataFrame(columns=KEYS + ["predictions", "evals"])
    return (done.groupby("cell_id", sort=False)
            .agg(**{k: (k, "first") for k in KEYS[1:]}, predictions=("predictions", "first"),
                 evals=("eval", list)).reset_index())


def _read(path: Any, evals: list[str], fields: tuple[str, ...], skipped: list[str]) -> dict[str, dict[str, Any]]:
    if not isinstance(path, str):
        skipped.append("(none recorded)")
        return {}
    try:
        return read_predictions(path, evals, fields)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, zlib.error, struct.error) as err:
        skipped.append(f"{path}: {err}")
        return {}


def _report(skipped: list[str], total: int) -> None:
    """Absent predictions (older results) are normal: logged at INFO; unreadable files are warned about."""
    unreadable = [s for s in skipped if s != "(none recorded)"]
    if len(skipped) > len(unreadable):
        logger.info("%d of %d completed cells record no predictions.npz (older results): their comparisons are "
                    "not paired image by image", len(skipped) - len(unreadable), total)
    if unreadable:
        logger.warning("%d predictions.npz file(s) could not be read and were skipped, e.g. %s",
                       len(unreadable), unreadable[0])


def load_correct(frame: pd.DataFrame) -> dict[tuple[str, str], tuple[np.ndarray, str]]:
    """(cell_id, eval) → (bool array: image right, labels hash), for every completed cell with predictions."""
    out: dict[tuple[str, str], tuple[np.ndarray, str]] = {}
    cells, skipped = _cells(frame), []
    for cid, path, evals in zip(cells["cell_id"], cells["predictions"], cells["evals"]):
        for e, arr in _read(path, evals, ("label", "top5"), skipped).items():
            label, top5 = arr["label"], arr["top5"]
            if top5.ndim != 2 or len(top5) != len(label):
                continue
            out[(cid, e)] = (top5[:, 0] == label, labels_digest(label))
    _report(skipped, len(cells))
    return out


def per_image_frame(frame: pd.DataFrame, p_true: bool = True) -> pd.DataFrame:
    """The tidy per-image frame: cell keys, eval, image (index in the test split), label, pred, correct and
    p_true (probability of the true class; float32), for every completed cell with predictions."""
    cells, skipped = _cells(frame), []
    fields = ("label", "top5", "p_true") if p_true else ("label", "top5")
    parts: dict[str, list] = {c: [] for c in PER_IMAGE_COLUMNS}
    for rec in cells.to_dict("records"):
        for e, arr in _read(rec["predictions"], rec["evals"], fields, skipped).items():
            n = len(arr["label"])
            for k in KEYS:
                parts[k].append(np.repeat(np.array([rec[k]], dtype=object if isinstance(rec[k], str) else None), n))
            parts["eval"].append(np.repeat(np.array([e], dtype=object), n))
            parts["image"].append(np.arange(n, dtype=np.int32))
            parts["label"].append(arr["label"].astype(np.int32))
            parts["pred"].append(arr["top5"][:, 0].astype(np.int32))
            parts["correct"].append(arr["top5"][:, 0] == arr["label"])
            parts["p_true"].append(arr["p_true"].astype(np.float32) if p_true else np.full(n, np.nan, np.float32))
    _report(skipped, len(cells))
    if not parts["image"]:
        return pd.DataFrame(columns=PER_IMAGE_COLUMNS)
    out = pd.DataFrame({c: np.concatenate(v) for c, v in parts.items()})
    for c in ("cell_id", "backbone", "pretrained", "protocol", "method", "dataset", "eval"):
        out[c] = out[c].astype("category")
    return out.astype({"shots": "int64", "seed": "int64"})
