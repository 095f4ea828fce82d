"""The search-space registry (timm style): one factory per space name.

A space module registers its factory with ``@register_space("name")``; the
factory takes the space's overrides as keyword arguments (cell spaces:
``num_nodes``, ``ops``) and returns a :class:`~shared_model.spaces.base.Space`.
Strategies and the CLI only call :func:`get_space` and :func:`list_spaces`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

from shared_model.spaces.base import Space

SpaceFactory = Callable[..., Space]

_SPACES: Dict[str, SpaceFactory] = {}


def register_space(name: str) -> Callable[[SpaceFactory], SpaceFactory]:
    """Decorator that registers ``factory(**overrides) -> Space`` under ``name``."""

    def wrap(factory: SpaceFactory) -> SpaceFactory:
        if name in _SPACES:
            raise ValueError(f"search space {name!r} is already registered")
        _SPACES[name] = factory
        return factory

    return wrap


def list_spaces() -> Tuple[str, ...]:
    """Registered space names, in registration order."""
    return tuple(_SPACES)


def get_space(name: str, **overrides: Any) -> Space:
    """Build the space ``name``; ``None`` overrides mean "the space's default".

    Raises:
        ValueError: an unknown name, or an override the space does not take.
    """
    if name not in _SPACES:
        raise ValueError(f"unknown search space {name!r}; choose from {', '.join(_SPACES)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return _SPACES[name](**given)
    except TypeError as exc:
        if "unexpected keyword" not in str(exc):
            raise
        raise ValueError(f"the {name} space takes no option(s) {', '.join(sorted(given))}") from None


def space_for_arch(arch: Any) -> Space:
    """The first registered space whose architecture type ``arch`` is (e.g. a Genotype: ``micro``)."""
    for name in _SPACES:
        space = _SPACES[name]()
        if isinstance(arch, space.arch_type):
            return space
    raise ValueError(f"no registered search space has architectures of type {type(arch).__name__}")


def space_for_json(data: Any) -> Space:
    """The first registered space that claims a parsed architecture JSON (:meth:`Space.claims_json`).

    When none claims it, the first space (whose parser then names what is wrong).
    """
    spaces = [_SPACES[name]() for name in _SPACES]
    return next((s for s in spaces if s.claims_json(data)), spaces[0])
