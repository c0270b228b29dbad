"""Files that appear whole or not at all.

Every output file and every cache entry is written to a temporary file in its
folder and renamed into place (``os.replace`` is atomic on POSIX): a reader,
or a rerun after Ctrl-C or ``kill -9``, finds the whole file or none of it. A
temporary file a killed process left behind carries that process's id in its
name; the next run removes it (``remove_stale_temporaries``).
"""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

TEMP_SUFFIX = ".tmp"
# ".<final name>.<pid>.<random>.tmp", as written by atomic_path.
_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to ``path``; on success, rename it onto ``path``.

    The temporary file is flushed to disk before the rename and gets the
    permissions an ordinary new file would get. On any exception (Ctrl-C
    included) it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary file of ``atomic_path`` (not a finished file)."""
    return _TEMP_NAME.match(Path(path).name) is not None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove temporary files under ``folder`` whose writing process no longer runs.

    Returns the removed paths. Files of live processes (a run writing into the
    same folder right now) are left alone.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.rglob(f"*{TEMP_SUFFIX}"):
        match = _TEMP_NAME.match(path.name)
        if match is None or not path.is_file():
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and not _alive(pid):
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:  # another run cleaned it first
                pass
    return removed


def write_text(path: Path, text: str) -> None:
    """Write ``path`` (UTF-8) whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
