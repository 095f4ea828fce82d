"""Options several commands share: one name, one metavar and one wording everywhere.

Nothing here imports torch: ``enas --help`` and ``enas COMMAND --help`` must
stay fast, so choices that need the model code (the registered spaces) are
checked when the command runs, not when the help is printed.
"""
from __future__ import annotations

from typing import Any, Callable

import click

#: The metavar of every value that several commands take (tests/test_cli_ux.py keeps them equal).
METAVARS = {"--dataset": "NAME", "--data-dir": "DIR", "--config": "FILE", "--out": "DIR", "--resume": "DIR",
            "--device": "DEVICE", "--benchmark": "FILE", "--set": "KEY=VALUE", "--space": "NAME",
            "--strategy": "NAME", "--preset": "NAME", "--seed": "N", "--epochs": "N", "--batch-size": "N",
            "--channels": "N", "--layers": "N", "--samples": "N", "--lut": "FILE"}


def option(name: str, *decls: str, **kwargs: Any) -> Callable:
    """``click.option`` with the shared metavar of ``name``."""
    kwargs.setdefault("metavar", METAVARS.get(name))
    return click.option(name, *decls, **kwargs)


def dataset() -> Callable:
    return option("--dataset", default=None,
                  help="cifar10 (default), cifar100, fashion_mnist, imagefolder, digits.")


def data_dir(default_help: str = "Folder holding the dataset (nothing is downloaded).") -> Callable:
    return option("--data-dir", default=None, help=default_help)


def device(default: Any = None) -> Callable:
    kwargs = {"show_default": True} if default else {}
    return option("--device", default=default, help="auto (CUDA when present), cpu, cuda or cuda:N.", **kwargs)


def seed() -> Callable:
    return option("--seed", type=int, default=None, help="Random seed (default 0).")


def config() -> Callable:
    return option("--config", "config_file", default=None, help="JSON or TOML file with config sections (see README).")


def sets(example: str) -> Callable:
    return option("--set", "sets", multiple=True,
                  help=f"Override any config key, e.g. --set {example} (repeatable).")


def out(help_text: str) -> Callable:
    return option("--out", default=None, help=help_text)


def resume() -> Callable:
    return option("--resume", "resume_dir", default=None,
                  help="Continue the run in this folder from its last checkpoint.")


def force(help_text: str = "Replace the run in --out (deletes only the files that run wrote).") -> Callable:
    return click.option("--force", is_flag=True, help=help_text)


def parse_sets(items) -> dict:
    """``--set KEY=VALUE`` items as ``{"KEY": value}`` (values parsed as JSON)."""
    from enas.config.lib import parse_set_option

    return dict(parse_set_option(item) for item in items)


class SpaceName(click.ParamType):
    """A registered search space, checked when the command runs (listing them loads torch)."""

    name = "space"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        from shared_model.spaces import list_spaces

        spaces = list_spaces()
        if value not in spaces:
            self.fail(f"{value!r} is not a registered space; choose from {', '.join(spaces)}", param, ctx)
        return value
