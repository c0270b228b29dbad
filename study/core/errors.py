"""How every failure is reported: one line."""

from __future__ import annotations


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``: how every failure is reported."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
