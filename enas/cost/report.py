"""Predicted next to measured latency of one architecture (``enas show`` / ``enas evaluate --lut``)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import nn

from enas.cost.lut import LatencyTable, entry_stats, space_identity
from enas.cost.measure import build_child, device_info, runner, time_interleaved, torch_threads
from shared_model.cost_blocks import NetSpec
from shared_model.spaces import Space


def _table_device(table: LatencyTable) -> Optional[torch.device]:
    """The table's device if this machine has it (else None: nothing to measure on)."""
    kind = table.device.get("type", "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        return None
    return torch.device(kind)


def latency_report(space: Space, arch: Any, table: LatencyTable, spec: Optional[NetSpec] = None,
                   model: Optional[nn.Module] = None, repeats: int = 50, measure: bool = True) -> Dict[str, Any]:
    """The table's prediction for ``arch`` and, on the table's device, a measurement of the same network.

    Args:
        spec: the network (default: the table's); it must be the table's.
        model: the network with its weights (default: built with random weights).
        repeats: timed runs of the measurement, at the table's batch, threads and runtime.
        measure: measure at all (False: prediction only).

    Raises:
        UserError: the table was measured for another space or network.
    """
    spec = spec or table.network
    table.check_matches(space_identity(space), spec, vocabulary=False)
    predicted = table.predict(space.cost_blocks(arch, spec))
    out: Dict[str, Any] = {"table": table.describe(), "batch_size": table.batch_size, "predicted_ms": predicted,
                           "measured_ms": None, "error_pct": None}
    device = _table_device(table)
    if not measure or device is None:
        out["note"] = "not measured: the table's device is not on this machine" if device is None else None
        return out
    threads = int(table.device.get("threads") or 0) or None
    shape = (table.batch_size, spec.in_channels) + spec.hw
    net = (model if model is not None else build_child(space, arch, spec)).eval()
    with torch_threads(threads):
        run = runner(net, [torch.randn(shape)], table.runtime, device, threads)
        times = time_interleaved([run], device, warmup=10, repeats=repeats, rounds=1, clock=table.clock)[0]
    median, p10, p90 = entry_stats(times)
    out["measured_ms"] = {"median": median, "p10": p10, "p90": p90, "repeats": repeats,
                          "device": device_info(device, threads)}
    out["error_pct"] = 100.0 * (predicted["total_ms"] - median) / median if median > 0 else None
    return out


def checkpoint_latency(lut: str, cfg: Any, genotype: Any, info: Dict[str, Any], model: nn.Module,
                       repeats: int) -> Dict[str, Any]:
    """:func:`latency_report` of a retrained checkpoint's network (``enas evaluate --lut``)."""
    from enas.cost.lut import read_table
    from enas.retrain.trained import input_shape, train_space
    from shared_model.spaces.cell_cost import EVAL_OPTIONS

    m = cfg.model
    # The eval-mode options of the retrained network; defaults are left out, as a table records them.
    options = {k: getattr(m, k) for k, default in EVAL_OPTIONS.items()
               if k != "stem_multiplier" and getattr(m, k, default) != default}
    channels, height, width = input_shape(info)
    spec = NetSpec.make(m.channels, m.layers, int(info["num_classes"]), channels, (height, width),
                        stem_multiplier=m.stem_multiplier, **options)
    return latency_report(train_space(cfg, genotype), genotype, read_table(lut), spec, model, max(repeats, 20))


def format_latency(report: Dict[str, Any]) -> List[str]:
    """Text lines: predicted and measured side by side."""
    p = report["predicted_ms"]
    lines = [f"latency (table: {report['table']}):",
             f"  predicted {p['total_ms']:.3f} ms (ops {p['ops_ms']:.3f} + fixed parts {p['fixed_ms']:.3f} "
             f"+ overhead {p['overhead_ms']:.3f})"]
    m = report.get("measured_ms")
    if m:
        lines.append(f"  measured  {m['median']:.3f} ms (p10 {m['p10']:.3f}, p90 {m['p90']:.3f}, {m['repeats']} runs) "
                     f"on this {m['device']['type']} ({m['device']['threads']} thread(s)): prediction "
                     f"{report['error_pct']:+.1f} %")
    elif report.get("note"):
        lines.append(f"  {report['note']}")
    return lines
