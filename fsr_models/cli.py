"""What the package's commands share: one-line user errors and the types of their options."""

from __future__ import annotations

import argparse

from fsr_models.evaluation.attacks import pixel_fraction


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module's docstring as written, and every option's default in --help."""


class Parser(argparse.ArgumentParser):
    """Every user error is one line on stderr, `error: ...`, and exit code 2 (no usage dump, no traceback)."""

    def error(self, message: str):
        self.exit(2, f"error: {' '.join(str(message).split())}\n")


def eps_value(text: str) -> float:
    """An L-inf radius on [0, 1] pixels: '8/255', '0.0314' or '0'."""
    try:
        return pixel_fraction(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1: give a whole number >= 1")
    return value
