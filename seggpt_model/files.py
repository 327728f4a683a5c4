"""Atomic file writes: the one definition every layer uses (torch-free).

A file written through :func:`atomic_write` either does not exist at its final path or is
complete: the bytes go to a temporary file in the same folder (same file system, so the rename is
atomic), which is flushed, ``fsync``-ed and renamed over the target with :func:`os.replace`. The
final file gets the permissions a plain ``open(path, "w")`` would give (``0o666`` less the umask),
not ``mkstemp``'s ``0o600``. On any error the temporary file is removed and the error re-raised.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def umask() -> int:
    """The process's current file-creation mask (read without changing it for long)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[IO[bytes]], None], *,
                 fsync: bool = True) -> Path:
    """Write ``path`` atomically.

    Args:
        path: the final file; its folder must exist.
        data: the bytes, a ``str`` (written as UTF-8), or a function that writes into the open
            binary file it is given (``lambda f: image.save(f, format="PNG")``).
        fsync: flush the file to disk before the rename (off for files that are cheap to redo,
            such as one PNG among thousands inside a folder that is itself renamed at the end).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: the folder is not writable or the disk is full (no temporary file is left).
        Whatever ``data`` raises (no temporary file is left).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


# ------------------------------------------------------------------------------------------------
# result folders: written under a temporary name, published by one rename
# ------------------------------------------------------------------------------------------------

def _owner_tag() -> str:
    """``HOST-PID`` of this process, as embedded in its temporary folder names (``-`` in the
    host name replaced, so the tag splits back unambiguously)."""

    return f"{socket.gethostname().replace('-', '_')}-{os.getpid()}"


def make_temp_dir(root: str | os.PathLike, name: str) -> Path:
    """Create ``root/.NAME.tmp-HOST-PID-XXXX`` (``root`` created as needed) for a result that is
    published as ``root/NAME`` by :func:`publish_dir`.

    The host name and process id in the name let :func:`remove_stale_temps` tell a folder whose
    writer is gone (killed with SIGKILL, node lost) from one still being written.

    Raises:
        OSError: ``root`` cannot be created or written.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{name}.tmp-{_owner_tag()}-", dir=root))


def publish_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Rename the finished folder ``tmp`` to ``final``, replacing an older result.

    ``mkdtemp`` made ``tmp`` 0700; it gets the permissions a plain ``mkdir`` would (umask), so
    results on a shared file system are readable as usual. An older ``final`` is first moved
    aside (``.NAME.old-PID``) and removed after the rename, so ``final`` is at every moment either
    the old or the new complete result.
    """

    tmp, final = Path(tmp), Path(final)
    os.chmod(tmp, 0o777 & ~umask())
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temps(root: str | os.PathLike, name: str, *, any_owner: bool = False) -> list[Path]:
    """Remove the temporary folders (``.NAME.tmp-*``, ``.NAME.old-*``) of ``root/NAME`` whose
    writing process is gone.

    Args:
        root, name: the result ``root/NAME``.
        any_owner: remove them whoever made them (the caller knows the writer is dead, e.g. a
            batch driver whose actor was lost); by default only folders made on this host by a
            process that no longer exists are removed, so a run writing the same name at the same
            time is left alone.

    Returns:
        The folders removed.
    """

    root = Path(root)
    host = _owner_tag().rsplit("-", 1)[0]
    removed = []
    pattern = glob.escape(f".{name}")
    for path in [*root.glob(f"{pattern}.tmp-*"), *root.glob(f"{pattern}.old-*")]:
        if not any_owner:
            tag = path.name[len(name) + 1:]
            kind, _, rest = tag.partition("-")            # ".tmp" / ".old", "HOST-PID-XXXX" / "PID"
            fields = rest.split("-")
            if kind == ".tmp" and len(fields) >= 3 and fields[0] == host and fields[1].isdigit():
                pid = int(fields[1])
            elif kind == ".old" and len(fields) == 1 and fields[0].isdigit():
                pid = int(fields[0])
            else:
                continue                                  # another host's, or not ours: keep
            if _pid_alive(pid):
                continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
