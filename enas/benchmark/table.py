"""Benchmark tables of NAS-Bench-201 cells, read once from CSV (Dong & Yang, ICLR 2020, Sec. 2-3).

A table is a UTF-8 CSV file with a header row. One column is ``arch``, the official
NAS-Bench-201 string (``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, see
:class:`~shared_model.nb201_arch.NB201Arch`); every other column is a finite number. The
names this project uses (:data:`COLUMNS`; accuracies in percent, as NAS-Bench-201 reports them):

=====================  =====================================================================
``valid_acc_epoch12``  validation accuracy (%) after the 12-epoch schedule (``hp="12"``): the
                       reward of a table-mode search, as in NAS-Bench-201's baselines
``valid_acc``          validation accuracy (%) after the 200-epoch schedule (``hp="200"``)
``test_acc``           test accuracy (%) after 200 epochs: the reported figure
``train_time_s``       simulated seconds one search query costs: 12 training epochs plus one
                       validation pass (NAS-Bench-201's ``train-all-time + valid-per-time``
                       at ``hp="12"``); the time budget sums this column
``epoch_time_s``       seconds per training epoch (informational)
=====================  =====================================================================

Other numeric columns are kept and may be named as reward, report or cost column. A table may
be partial (a subset of the 15,625 cells); querying a cell it lacks is a clear error. Every
problem with the file is one :class:`~enas.errors.UserError` line naming the file and line.
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np

from enas.runs.checkpoint import atomic_write_text
from enas.errors import UserError
from shared_model.nb201_arch import NB201_OPS, NUM_ARCHS, NUM_EDGES, NB201Arch, NB201ArchError

logger = logging.getLogger(__name__)

ARCH_COLUMN = "arch"
COLUMNS: Dict[str, str] = {
    "valid_acc_epoch12": "validation accuracy (%) after 12 epochs (hp=12): the search reward",
    "valid_acc": "validation accuracy (%) after 200 epochs (hp=200)",
    "test_acc": "test accuracy (%) after 200 epochs: the reported figure",
    "train_time_s": "simulated seconds of one query: 12 training epochs + one validation pass",
    "epoch_time_s": "seconds per training epoch",
}
_MAX_FIELD = 10_000  # a hostile file with a huge field fails fast with a clear line
_POWERS = np.array([len(NB201_OPS) ** (NUM_EDGES - 1 - k) for k in range(NUM_EDGES)], dtype=np.int64)


def arch_index(arch: NB201Arch) -> int:
    """Position of ``arch`` in :func:`~shared_model.nb201_arch.all_archs` order (base-5 actions)."""
    return int(np.dot(arch.actions(), _POWERS))


class BenchmarkTable:
    """Metrics of NAS-Bench-201 cells, looked up by :class:`NB201Arch`.

    Args:
        archs: the cells, one per row, no duplicates.
        columns: metric names (not ``arch``).
        values: ``(rows, columns)`` finite floats.
        source: where the table came from (for messages).
        sha256: hex digest of the file it was read from ("" if built in memory).
    """

    def __init__(self, archs: Sequence[NB201Arch], columns: Sequence[str], values: np.ndarray,
                 source: str = "<memory>", sha256: str = "") -> None:
        self.archs: Tuple[NB201Arch, ...] = tuple(archs)
        self.columns: Tuple[str, ...] = tuple(columns)
        self.values = np.asarray(values, dtype=np.float64).reshape(len(self.archs), len(self.columns))
        self.source, self.sha256 = source, sha256
        self._col = {c: k for k, c in enumerate(self.columns)}
        self._row = np.full(NUM_ARCHS, -1, dtype=np.int64)
        for r, arch in enumerate(self.archs):
            i = arch_index(arch)
            if self._row[i] >= 0:
                raise UserError(f"benchmark table {source}: architecture {arch.to_string()} appears twice")
            self._row[i] = r

    def __len__(self) -> int:
        return len(self.archs)

    @property
    def complete(self) -> bool:
        return len(self.archs) == NUM_ARCHS

    def __contains__(self, arch: NB201Arch) -> bool:
        return bool(self._row[arch_index(arch)] >= 0)

    def require(self, columns: Iterable[str]) -> None:
        """Raise one line naming the first of ``columns`` the table lacks."""
        for name in columns:
            if name not in self._col:
                raise UserError(f"benchmark table {self.source} has no column {name!r} "
                                f"(columns: {', '.join(self.columns)})")

    def row_of(self, arch: NB201Arch) -> int:
        r = int(self._row[arch_index(arch)])
        if r < 0:
            raise UserError(f"architecture {arch.to_string()} is not in benchmark table {self.source} "
                            f"(a partial table: {len(self)} of {NUM_ARCHS} cells)")
        return r

    def value(self, arch: NB201Arch, column: str) -> float:
        """One metric of one cell; an unknown cell or column is a :class:`UserError`."""
        self.require([column])
        return float(self.values[self.row_of(arch), self._col[column]])

    def row(self, arch: NB201Arch) -> Dict[str, float]:
        r = self.row_of(arch)
        return {c: float(self.values[r, k]) for c, k in self._col.items()}

    def column(self, name: str) -> np.ndarray:
        """All values of one column, in row order (a read-only view)."""
        self.require([name])
        out = self.values[:, self._col[name]]
        out.flags.writeable = False
        return out

    def best(self, column: str) -> Tuple[NB201Arch, float]:
        """The cell with the highest value of ``column`` (the first one on ties)."""
        values = self.column(column)
        r = int(np.argmax(values))
        return self.archs[r], float(values[r])

    def rank(self, arch: NB201Arch, column: str) -> int:
        """1 + the number of cells with a strictly higher value of ``column`` (1 = the optimum)."""
        return 1 + int((self.column(column) > self.value(arch, column)).sum())


def _number(text: str, where: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: column {column!r} holds {text[:40]!r}, not a number") from None
    if not math.isfinite(value):
        raise UserError(f"{where}: column {column!r} holds {text[:40]!r}; values must be finite numbers")
    return value


def read_table(path: str | Path) -> BenchmarkTable:
    """Read and validate a benchmark CSV (see the module docstring for the format).

    Raises:
        UserError: a missing or unreadable file, no header or no rows, a missing ``arch``
            column or a duplicate column, a row of the wrong length, a malformed or
            duplicate architecture, a non-numeric, NaN or infinite value.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"benchmark table not found: {path}")
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except OSError as exc:
        raise UserError(f"cannot read benchmark table {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"benchmark table {path} is not UTF-8 text (expected a CSV file)") from None
    csv.field_size_limit(_MAX_FIELD)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        while header is not None and not any(h.strip() for h in header):
            header = next(reader, None)
        if header is None:
            raise UserError(f"benchmark table {path} is empty (expected a header row with an 'arch' column)")
        header = [h.strip() for h in header]
        seen = set()
        for name in header:
            if not name:
                raise UserError(f"benchmark table {path}: the header has an empty column name")
            if name in seen:
                raise UserError(f"benchmark table {path}: column {name!r} appears twice in the header")
            seen.add(name)
        if ARCH_COLUMN not in seen:
            raise UserError(f"benchmark table {path} has no {ARCH_COLUMN!r} column (header: {', '.join(header)})")
        if len(header) < 2:
            raise UserError(f"benchmark table {path} has no metric columns besides {ARCH_COLUMN!r}")
        a = header.index(ARCH_COLUMN)
        metrics = [h for h in header if h != ARCH_COLUMN]
        archs: List[NB201Arch] = []
        rows: List[List[float]] = []
        first_line: Dict[int, int] = {}
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            where = f"benchmark table {path}, line {reader.line_num}"
            if len(fields) != len(header):
                raise UserError(f"{where}: {len(fields)} fields, the header has {len(header)}")
            try:
                arch = NB201Arch.from_string(fields[a].strip())
            except NB201ArchError as exc:
                raise UserError(f"{where}: {exc}") from None
            first = first_line.setdefault(arch_index(arch), reader.line_num)
            if first != reader.line_num:
                raise UserError(f"{where}: architecture {arch.to_string()} appears twice (first on line {first})")
            archs.append(arch)
            rows.append([_number(f, where, h) for h, f in zip(header, fields) if h != ARCH_COLUMN])
    except csv.Error as exc:
        raise UserError(f"benchmark table {path}, line {reader.line_num}: malformed CSV ({exc})") from None
    if not archs:
        raise UserError(f"benchmark table {path} has a header but no rows")
    values = np.array(rows, dtype=np.float64)
    table = BenchmarkTable(archs, metrics, values, source=str(path), sha256=hashlib.sha256(raw).hexdigest())
    logger.info("benchmark table %s: %d cells, columns %s", path, len(table), ", ".join(metrics))
    return table


def table_text(archs: Sequence[NB201Arch], columns: Mapping[str, Sequence[float]], digits: int = 4) -> str:
    """CSV text of a table: ``arch`` first, then ``columns`` in the given order."""
    names = list(columns)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([ARCH_COLUMN, *names])
    cols = [np.asarray(columns[n], dtype=np.float64) for n in names]
    for r, arch in enumerate(archs):
        writer.writerow([arch.to_string(), *(f"{c[r]:.{digits}f}" for c in cols)])
    return buf.getvalue()


def write_table(path: str | Path, archs: Sequence[NB201Arch], columns: Mapping[str, Sequence[float]],
                digits: int = 4) -> Path:
    """Write a benchmark CSV atomically (a kill leaves the old file or none, never half a file)."""
    for name, col in columns.items():
        if len(col) != len(archs):
            raise ValueError(f"column {name!r} has {len(col)} values for {len(archs)} architectures")
    path = Path(path)
    atomic_write_text(path, table_text(archs, columns, digits))
    return path
