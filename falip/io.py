"""Files written so that a crash, a full disk, a second process or a planted link never leaves half a
file behind or writes outside the intended path; where generated data is cached; one lock per folder.

Every write goes through a temporary file created *exclusively* (``O_CREAT | O_EXCL``: a fresh,
randomly named file; an existing file or symlink of that name is never opened, so a planted link
cannot redirect it) beside the target, then renamed into place. A failed write removes its
temporary file; a full disk (or quota) becomes :class:`OutputError`, one line naming the file.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping

from .errors import FalipError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class OutputError(FalipError, OSError):
    """A result could not be written: the disk is full, the folder is not writable, a path is a link."""


def output_error(path: str | Path, error: OSError) -> OutputError:
    """``error`` (raised while writing ``path``) as one line that says what to do."""
    if error.errno in NO_SPACE:
        return OutputError(f"cannot write {path}: no space left on the device ({os.strerror(error.errno)}); "
                           f"free some space or set run.output_dir=<a folder on another disk>, then rerun with "
                           f"run.resume=true (finished splits and items are kept)")
    return OutputError(f"cannot write {path}: {error.strerror or error}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a fresh, exclusively created file beside ``path``, then rename it to ``path``.

    The temporary file is removed if ``write`` fails; an ``OSError`` becomes :class:`OutputError`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes 0600: results stay readable as plain files are
        os.close(handle)
        tmp = Path(name)
        write(tmp)
        os.replace(tmp, path)
        tmp = None
    except OSError as error:
        raise output_error(path, error) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through an exclusive temporary file (see :func:`atomic_write`)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    return atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through an exclusive temporary file (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode())


def write_json(path: str | Path, payload: Mapping[str, Any] | list) -> Path:
    """Atomically write ``payload`` as indented JSON (non-JSON values via ``str``)."""
    return atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def open_for_append(path: str | Path, fresh: bool) -> IO[str]:
    """A text handle that appends to ``path`` and never follows a symlink: ``fresh`` replaces whatever is
    there (a planted link is removed, not followed) by a new file created exclusively; otherwise the
    existing regular file is opened (a symlink raises :class:`OutputError`)."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    try:
        if fresh:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            flags |= os.O_CREAT | os.O_EXCL
        return os.fdopen(os.open(path, flags, 0o644), "a")
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OutputError(f"{path} is a symbolic link: refusing to write through it (remove it)") from None
        raise output_error(path, error) from None


def drop_torn_tail(path: Path) -> bool:
    """Cut a last line that has no newline (the line being written when a run died); True if one was cut."""
    with open(path, "rb+") as handle:
        data = handle.read()
        if not data or data.endswith(b"\n"):
            return False
        handle.truncate(data.rfind(b"\n") + 1)
        return True


def _shipped_folder(package: str, what: str) -> Path:
    """Where the data package ``package`` lies: its top-level folder in a checkout (an editable install maps the
    package there), ``falip/<name>/`` inside an installed wheel."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FalipError(f"the package {package} ({what}) is not installed: reinstall falip (pip install -e . in a "
                         f"checkout)")
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def configs_dir() -> Path:
    """The folder of the experiment configs: ``configs/`` at the top of a checkout, ``falip/configs/`` in a wheel."""
    return _shipped_folder("falip.configs", "the experiment configs")


def docs_dir() -> Path:
    """The folder of the documentation: ``docs/`` at the top of a checkout, ``falip/docs/`` in a wheel."""
    return _shipped_folder("falip.docs", "the documentation")


def cache_root() -> Path:
    """Where generated datasets (and other derived files) are cached: ``$FALIP_CACHE`` or ``~/.cache/falip``."""
    return Path(os.environ.get("FALIP_CACHE") or Path.home() / ".cache" / "falip").expanduser()


# ---------------------------------------------------------------------------------------------- locks
def holder() -> dict[str, Any]:
    """Who holds a lock or runs a job: host, pid and start time, recorded so others can name it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def process_alive(info: Mapping[str, Any]) -> bool | None:
    """Whether the process ``info`` names (``host``, ``pid``) still runs: True/False on this host,
    None for another host (it cannot be checked from here)."""
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return None
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LockHeld(FalipError):
    """Another live process holds the lock."""


@contextlib.contextmanager
def folder_lock(lock_path: str | Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (``fcntl.flock``: released by the kernel when the process
    dies, so a crash never leaves a stale lock). The file records the holder (host, pid) so that a second
    process is told who has it; ``wait=False`` raises :class:`LockHeld` at once, ``wait=True`` blocks."""
    import fcntl

    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            try:
                info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except (json.JSONDecodeError, OSError):
                info = {}
            who = f"process {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('since', '?')}" \
                if info else "another process"
            raise LockHeld(f"{what} is in use by {who} (lock {lock_path}): wait for it to finish, or choose "
                           f"another run.output_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # an empty lock file = free: no stale holder is ever named
    finally:
        os.close(fd)
