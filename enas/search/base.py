"""What every search strategy gives the driver: resumable phases and a derive.

A strategy splits each epoch into phases (``train``, then e.g. ``controller``)
and the end of the search into a ``derive`` phase. Each phase is a generator
that can start at any unit index and yields a metrics dict after every unit,
so the driver can checkpoint between any two units and resume exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple



@dataclass
class Phase:
    """A resumable sequence of work units.

    Attributes:
        name: ``train``, ``controller``, ``derive``, ...
        length: number of units.
        run: ``run(start)`` yields one metrics dict per unit from ``start``.
        steps: whether each unit is a training step (advances the global step).
    """

    name: str
    length: int
    run: Callable[[int], Iterator[Dict[str, Any]]]
    steps: bool = False


class Strategy:
    """Interface of a search strategy (ENAS, random search, DARTS)."""

    name = "base"

    def phases(self, epoch: int) -> List[Phase]:
        """The phases of ``epoch``; the first is the weight-training phase."""
        raise NotImplementedError

    def epoch_result(self) -> Tuple[Optional[Any], Dict[str, Any]]:
        """Best genotype seen this epoch (for ``genotypes/epoch_NNN.json``) and summary values."""
        raise NotImplementedError

    def derive_phase(self, samples: int) -> Phase:
        """The derive phase: scores candidates with the shared weights."""
        raise NotImplementedError

    def derive_result(self) -> Tuple[Any, Dict[str, Any]]:
        """The derived genotype and the details written to ``derive.json``."""
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        raise NotImplementedError

    def epoch_images(self) -> Dict[str, Any]:
        """Extra TensorBoard images of the epoch: tag -> (H, W, 3) uint8 array."""
        return {}

    def derive_images(self) -> Dict[str, Any]:
        """Extra TensorBoard images of the derive: tag -> (H, W, 3) uint8 array."""
        return {}

    def begin_epoch(self, epoch: int) -> None:
        """Reset per-epoch bookkeeping (not called when resuming mid-epoch)."""
