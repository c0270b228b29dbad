"""How every failure is reported: one line that names the cause."""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Iterable

# Longest message kept from one exception (a message can print a whole tensor).
MAX_MESSAGE = 300


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0].strip() if text else ""
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "…"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from or while handling, outermost first."""
    chain, seen = [error], {id(error)}
    while True:
        current = chain[-1]
        nxt = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
        if nxt is None or id(nxt) in seen or len(chain) >= 20:
            return chain
        chain.append(nxt)
        seen.add(id(nxt))


def _where(chain: list[BaseException], files: Iterable[str]) -> str:
    """`` (file.py, line N: code)`` of the deepest frame in ``files`` over the chain, or ""."""
    targets = {os.path.realpath(f) for f in files if f}
    if not targets:
        return ""
    for error in reversed(chain):  # innermost first: the frame closest to the cause
        frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.realpath(f.filename) in targets]
        if frames:
            frame = frames[-1]
            code = f": {frame.line}" if frame.line else ""
            return f" ({Path(frame.filename).name}, line {frame.lineno}{code})"
    return ""


def one_line(error: BaseException, files: Iterable[str] = ()) -> str:
    """``Type: first line of the message``, with the root cause: how every failure is reported.

    Parameters
    ----------
    error : BaseException
    files : iterable of str
        Source files whose frames count as the failure's own (a model's file):
        the deepest such frame is appended as ``(file.py, line N: code)``, so a
        bare ``assert`` in a model still says which one failed.

    Returns
    -------
    str
        One line. When ``error`` was raised from (or while handling) another
        exception, the innermost one's first line follows as ``; cause: ...``
        unless the outer line already says it: a wrapper such as Pyro's
        "Error while computing log_prob at site 'y':" keeps its real cause.
    """
    chain = _chain(error)
    text = _first_line(error)
    if len(chain) > 1:
        inner = _first_line(chain[-1])
        message = inner.split(": ", 1)[-1]
        if message not in text:
            text += f"; cause: {inner}"
    elif text.endswith(":"):  # a wrapper whose cause is on its next lines
        lines = [line.strip() for line in str(error).strip().splitlines()[1:] if line.strip()]
        if lines:
            text += " " + lines[0][:MAX_MESSAGE]
    return (text + _where(chain, files)).replace("\n", " ")
