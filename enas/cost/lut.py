"""Latency lookup tables: the JSON file, its unit check, and predictions from it.

A table holds the measured latency of every block a space can place in one
child network (:meth:`Space.cost_vocabulary`) on one device, at one batch size,
with one runtime. A network's predicted latency is the sum of its blocks'
entries (the searchable ops plus the fixed parts: stem, preprocessing, node
sums, head) plus a calibrated ``overhead``, the median of measured minus summed
latency over a few calibration networks (the Python glue between blocks that
no block contains; 0 when that median is negative). FBNet (Sec. 3.2) and ProxylessNAS (Sec. 3.3) predict
the same way, without the overhead.

The file says everything needed to trust it: ``units`` (``ms``; ``us`` and
``s`` tables are converted on load, anything else is refused: HardCoReNAS
users met unmet constraints from a table in the wrong unit), the statistic
(``median`` of ``repeats`` timed runs after ``warmup``, with ``p10``/``p90``
per entry), the space, the network, the batch size, the device and thread
count, the runtime and the library versions, and the load average around the
measurement. Files are written atomically.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from enas.runs.checkpoint import atomic_write_text
from enas.errors import UserError
from shared_model.cost_blocks import Block, NetSpec

FORMAT = "enas-latency-table"
VERSION = 1
#: accepted units and their factor to milliseconds
UNITS = {"ms": 1.0, "us": 1e-3, "s": 1e3}


@dataclass
class LatencyTable:
    """A loaded latency table; every time is in milliseconds.

    Attributes:
        space: ``{"name", "num_nodes", "ops"}`` of the space it was measured for.
        network: the child network (:class:`NetSpec`).
        batch_size: images per measured forward pass.
        device: ``{"type", "name", "threads"}``.
        runtime: ``torch`` or ``onnxruntime``.
        entries: block key -> ``{"median", "p10", "p90", "op"}``.
        overhead: calibrated glue time ``{"median", ...}`` added once per network.
        meta: everything else of the file (versions, measurement settings, load).
    """

    space: Dict[str, Any]
    network: NetSpec
    batch_size: int
    device: Dict[str, Any]
    runtime: str
    entries: Dict[str, Dict[str, Any]]
    overhead: Dict[str, Any] = field(default_factory=lambda: {"median": 0.0})
    meta: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "units": "ms", "statistic": "median",
                "space": self.space, "network": self.network.to_dict(), "batch_size": self.batch_size,
                "device": self.device, "runtime": self.runtime, **self.meta,
                "fixed": {"overhead": self.overhead}, "entries": self.entries}

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @property
    def clock(self) -> str:
        """``wall``, or ``cpu`` (thread CPU time, measured on a busy machine)."""
        return str(self.meta.get("measurement", {}).get("clock", "wall"))

    def describe(self) -> str:
        n = self.network
        px = n.image_size if n.image_width is None else f"{n.hw[0]}x{n.hw[1]}"
        return (f"{self.space.get('name')} space, C {n.channels}, {n.layers} layers, {px} px, "
                f"batch {self.batch_size}, {self.device.get('type')} ({self.device.get('threads')} thread(s)), "
                f"{self.runtime}, {self.clock} clock")

    def entry(self, block: Block) -> float:
        try:
            return float(self.entries[block.key]["median"])
        except KeyError:
            raise UserError(f"the latency table has no entry {block.key} (it was measured for "
                            f"{self.describe()}); rebuild it with `enas latency-table`") from None

    def predict(self, blocks: Sequence[Block]) -> Dict[str, float]:
        """Predicted latency (ms) of a network given as blocks: ``ops + fixed + overhead = total``."""
        ops = sum(self.entry(b) for b in blocks if b.is_op)
        fixed = sum(self.entry(b) for b in blocks if not b.is_op)
        overhead = float(self.overhead.get("median", 0.0))
        return {"ops_ms": ops, "fixed_ms": fixed, "overhead_ms": overhead, "total_ms": ops + fixed + overhead}

    def check_matches(self, space: Mapping[str, Any], network: NetSpec, batch_size: int | None = None,
                      vocabulary: bool = True) -> None:
        """Refuse (one line) a table measured for another space, network or batch size.

        ``vocabulary=False`` leaves the space out: pricing one given architecture
        needs its blocks (a missing one is an error naming it), not every block of
        the space (``micro`` and ``darts`` genotypes share one child network).
        """
        wanted: Dict[str, Any] = {"network": network.to_dict()}
        have: Dict[str, Any] = {"network": self.network.to_dict()}
        if vocabulary:
            wanted["space"], have["space"] = dict(space), self.space
        if batch_size is not None:
            wanted["batch_size"], have["batch_size"] = batch_size, self.batch_size
        diffs = _differences(have, wanted)
        if diffs:
            raise UserError("the latency table was measured for another network (" + "; ".join(diffs[:4]) +
                            "); rebuild it with `enas latency-table` for this one")


def _differences(have: Mapping[str, Any], wanted: Mapping[str, Any], prefix: str = "") -> List[str]:
    out = []
    for key in sorted(set(have) | set(wanted)):
        a, b = have.get(key), wanted.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a!r} in the table, {b!r} here")
    return out


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where} must be a finite number, got {str(value)[:40]!r}")
    return float(value)


def _require(data: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)}")


def read_table(path: str | Path) -> LatencyTable:
    """Load and check a latency table (units converted to ms).

    Raises:
        UserError: a missing or malformed file, another format or version, a
            unit other than ms/us/s, a non-finite or negative entry.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"latency table {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UserError(f"latency table {path} is not readable JSON: {' '.join(str(exc).split())[:120]}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path} is not an enas latency table (no \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise UserError(f"latency table {path} has version {data.get('version')!r}; this enas reads {VERSION}")
    unit = data.get("units")
    if unit not in UNITS:
        given = f"units {str(unit)[:20]!r}" if "units" in data else "no \"units\" field"
        raise UserError(f"latency table {path} has {given}; expected one of {', '.join(UNITS)} "
                        "(latency per forward pass)")
    _require(data, ("space", "network", "batch_size", "device", "runtime", "entries"), f"latency table {path}")
    scale = UNITS[unit]
    entries: Dict[str, Dict[str, Any]] = {}
    if not isinstance(data["entries"], dict) or not data["entries"]:
        raise UserError(f"latency table {path} has no entries")
    for key, entry in data["entries"].items():
        where = f"latency table {path}: entry {key[:80]}"
        if not isinstance(entry, dict):
            raise UserError(f"{where} must be an object with a median")
        _require(entry, ("median",), where)
        stats = {k: _number(v, f"{where} {k}") * scale for k, v in entry.items() if k in ("median", "p10", "p90")}
        if stats["median"] < 0:
            raise UserError(f"{where} is negative")
        entries[key] = dict(stats, op=bool(entry.get("op", False)))
    overhead = dict(data.get("fixed", {}).get("overhead", {"median": 0.0}))
    overhead["median"] = _number(overhead.get("median", 0.0), f"latency table {path}: overhead") * scale
    try:
        network = NetSpec.from_dict(data["network"])
        batch = int(data["batch_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"latency table {path}: bad network or batch size ({exc})") from None
    meta = {k: v for k, v in data.items() if k not in ("format", "version", "units", "statistic", "space", "network",
                                                        "batch_size", "device", "runtime", "fixed", "entries")}
    return LatencyTable(dict(data["space"]), network, batch, dict(data["device"]), str(data["runtime"]),
                        entries, overhead, meta)


def space_identity(space: Any) -> Dict[str, Any]:
    """What identifies a space's block vocabulary: its name and (cell spaces) node count and ops."""
    out: Dict[str, Any] = {"name": space.name}
    for attr in ("num_nodes", "ops"):
        if hasattr(space, attr):
            value = getattr(space, attr)
            out[attr] = list(value) if isinstance(value, (tuple, list)) else value
    return out


def entry_stats(times_ms: Sequence[float]) -> Tuple[float, float, float]:
    """Median, 10th and 90th percentile of a list of times."""
    import numpy as np

    arr = np.asarray(times_ms, dtype=float)
    return float(np.median(arr)), float(np.percentile(arr, 10)), float(np.percentile(arr, 90))
