"""Files that appear whole or not at all.

Every output file and every cache entry is written to a temporary file in its
folder and renamed into place (``os.replace`` is atomic on POSIX): a reader,
or a rerun after Ctrl-C or ``kill -9``, finds the whole file or none of it. A
temporary file a killed process left behind carries that process's id in its
name; the next run removes it (``remove_stale_temporaries``).
"""

from __future__ import annotations

import hashlib
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


# -- names that become paths ----------------------------------------------------------------

# Characters a path component built from a name may keep; everything else becomes "_".
_UNSAFE_CHARACTER = re.compile(r"[^A-Za-z0-9._-]")
# Longest component kept as is (file systems allow 255 bytes; room is left for prefixes).
MAX_COMPONENT = 100


def unsafe_name_reason(name: str) -> str | None:
    """Why ``name`` may not name a file or folder of the outputs, or None when it may.

    Refused: the empty name, ``.`` and ``..``, any name holding a path separator
    (``/`` or ``\\``), ``..``, a control character, or longer than
    ``MAX_COMPONENT`` characters. An absolute path holds a separator.
    """
    if not isinstance(name, str) or not name:
        return "it is empty"
    control = [c for c in name if ord(c) < 32 or 127 <= ord(c) < 160]
    if control:
        return f"it holds a control character ({control[0]!r})"
    for separator in ("/", "\\", os.sep):
        if separator in name:
            return f"it holds a path separator ({separator!r})"
    if ".." in name or name == ".":
        return "it holds '..' or is '.'"
    if len(name) > MAX_COMPONENT:
        return f"it is longer than {MAX_COMPONENT} characters"
    return None


def safe_component(name: str) -> str:
    """One path component made from ``name``: how every output path is built from a name.

    A name of letters, digits, ``.``, ``_`` and ``-`` that does not start with
    ``.`` (and is at most ``MAX_COMPONENT`` long) is kept as it is. Any other
    name becomes a slug: every other character becomes ``_``, leading dots
    become ``_`` (no ``.``, ``..`` or hidden files), it is cut to
    ``MAX_COMPONENT`` characters and a short hash of the original name is
    appended, so two different names never share a path. The result never
    holds a separator, so ``folder / safe_component(name)`` stays inside
    ``folder``.
    """
    name = str(name)
    slug = _UNSAFE_CHARACTER.sub("_", name)
    slug = re.sub(r"^\.+", lambda m: "_" * len(m.group()), slug)
    if slug == name and 0 < len(name) <= MAX_COMPONENT:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{slug[:MAX_COMPONENT] or '_'}-{digest}"


def inside(root: Path, *names: str) -> Path:
    """``root / safe_component(n1) / safe_component(n2) / ...``, checked to lie inside ``root``.

    Raises
    ------
    ValueError
        If the joined path would leave ``root`` (cannot happen with safe
        components; the check guards against later edits).
    """
    root = Path(root)
    path = root.joinpath(*(safe_component(n) for n in names))
    base = os.path.realpath(root)
    if os.path.commonpath([base, os.path.realpath(path)]) != base:
        raise ValueError(f"output path {path} would leave {root}")
    return path


def unwritable_reason(folder: Path) -> str | None:
    """Why files cannot be written in ``folder`` (created if missing), or None when they can.

    Tried for real, not guessed from permission bits (root ignores them, a
    read-only mount does not show in them): a temporary file is created in
    ``folder``, or, when ``folder`` does not exist yet, a temporary folder in its
    nearest existing ancestor; either is removed at once, so nothing is left.
    """
    folder = Path(folder)
    probe_in = folder
    while not probe_in.exists():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        return f"{probe_in} is not a folder"
    try:
        if probe_in == folder:
            fd, name = tempfile.mkstemp(prefix=f".write-check.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=folder)
            os.close(fd)
            os.unlink(name)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=f".write-check.{os.getpid()}.", dir=probe_in))
    except OSError as error:
        return f"cannot write in {probe_in} ({error.strerror or type(error).__name__})"
    return None
