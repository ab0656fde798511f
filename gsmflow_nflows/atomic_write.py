"""Output files: checked before a run, written atomically, kept somewhere safe if that fails.

Every file the package writes (results, model files, generated features,
checkpoints) goes through :func:`write_atomically`: the bytes go to a
temporary file next to the target, which then replaces it, so a crash,
Ctrl-C or a full disk leaves the previous file intact and no temporary file
behind. What users expect of a plain ``open(path, "w")`` still holds: a
symlink is written through (its target is replaced, the link stays), a
character device or a FIFO (``/dev/null``) is written to directly, an open
descriptor (``/dev/stdout``) at its offset, after what was printed to it; a
new file gets ``0o666 & ~umask``, an existing file keeps its mode, a
read-only file is refused. Failures (``OSError``, and the ``RuntimeError``
that ``torch.save`` raises for a failed write) become one :class:`WriteError`
naming the file, the reason and a fix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from gsmflow_nflows.errors import WriteError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = [
    "WriteError",
    "check_writable",
    "check_writable_folder",
    "current_umask",
    "write_atomically",
    "write_with_fallback",
]

#: What to write: text (UTF-8), bytes, or ``write(stream)`` given a binary stream.
Content = str | bytes | Callable[[BinaryIO], None]

#: Paths naming an open file descriptor rather than a file (Linux, macOS).
_DESCRIPTOR = re.compile(
    r"/dev/(?P<std>stdin|stdout|stderr)|/dev/fd/(?P<fd>\d+)"
    r"|/proc/(?P<pid>self|thread-self|\d+)/fd/(?P<pfd>\d+)"
)
_STANDARD = {"stdin": 0, "stdout": 1, "stderr": 2}
_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class _RecordingFile(io.FileIO):
    """A file that remembers the ``OSError`` of a failed write (``torch.save`` hides it)."""

    error: OSError | None = None

    def write(self, data: ReadableBuffer, /) -> int:
        try:
            return super().write(data)
        except OSError as error:
            self.error = error
            raise


def current_umask() -> int:
    """The process's umask (read by setting it and restoring it at once).

    Example:
        >>> 0 <= current_umask() <= 0o777
        True
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _descriptor(path: Path) -> int | None:
    """The descriptor of this process that ``path`` names (/dev/stdout: 1), or ``None``.

    Symlinks are followed one hop at a time: /dev/stdout -> /proc/self/fd/1 -> the
    file behind it, which must not be replaced but written at the descriptor's offset.
    """
    current = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on symlink hops
        match = _DESCRIPTOR.fullmatch(current)
        if match and match["std"]:
            return _STANDARD[match["std"]]
        if match and match["fd"]:
            return int(match["fd"])
        if match and match["pid"] in ("self", "thread-self", str(os.getpid())):
            return int(match["pfd"])
        if not os.path.islink(current):
            return None
        link = os.readlink(current)
        current = os.path.normpath(os.path.join(os.path.dirname(current), link))
    return None


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _read_only(path: Path, info: os.stat_result) -> bool:
    # Write bits checked too: root may write anything, but a 0444 file says "keep".
    return not os.access(path, os.W_OK) or not info.st_mode & 0o222


def _refusal(path: Path, real: Path, info: os.stat_result | None) -> str | None:
    """Why ``path`` (resolved to ``real``) must not be written, or ``None``."""
    shown = f"{path}" if real == Path(os.path.abspath(path)) else f"{path} (-> {real})"
    if info is None:
        return None
    if stat.S_ISDIR(info.st_mode):
        return f"cannot write {shown}: it is a folder; give a file name."
    if stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode):
        if not os.access(real, os.W_OK):
            return f"cannot write {shown}: no permission to write to this device."
        return None
    if not stat.S_ISREG(info.st_mode):
        return f"cannot write {shown}: not a regular file, device or FIFO; write elsewhere."
    if _read_only(real, info):
        return f"cannot write {shown}: the file is read-only; make it writable or write elsewhere."
    return None


def check_writable(path: str | Path) -> None:
    """Raise :class:`WriteError` now, before any work, if ``path`` cannot be written.

    Checks what :func:`write_atomically` needs: an existing folder that may be
    written, and a target that is not a folder and not a read-only file.

    Example:
        >>> check_writable("/no/such/folder/out.json")
        Traceback (most recent call last):
        ...
        gsmflow_nflows.errors.WriteError: cannot write /no/such/folder/out.json: folder \
/no/such/folder does not exist.
    """
    target = Path(path).expanduser()
    descriptor = _descriptor(target)
    if descriptor is not None:
        try:
            flags = fcntl.fcntl(descriptor, fcntl.F_GETFL)
        except OSError:
            raise WriteError(f"cannot write {path}: descriptor {descriptor} is not open.") from None
        if flags & os.O_ACCMODE == os.O_RDONLY:
            raise WriteError(f"cannot write {path}: descriptor {descriptor} is read-only.")
        return
    real = Path(os.path.realpath(target))
    try:
        info = _stat(real)
    except OSError as error:
        raise WriteError(f"cannot write {path}: {_reason(error)}.") from None
    refusal = _refusal(target, real, info)
    if refusal:
        raise WriteError(refusal)
    if info is not None and not stat.S_ISREG(info.st_mode):
        return  # a device or a FIFO: written in place, its folder does not matter
    parent = real.parent
    if not parent.exists():
        raise WriteError(f"cannot write {path}: folder {parent} does not exist.")
    if not parent.is_dir():
        raise WriteError(f"cannot write {path}: {parent} is not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WriteError(f"cannot write {path}: folder {parent} is not writable.")


def check_writable_folder(path: str | Path) -> None:
    """Raise :class:`WriteError` now if files cannot be written into folder ``path``.

    A missing folder is fine when it can be created (its nearest existing
    ancestor is a writable folder).

    Example:
        >>> check_writable_folder(tempfile.gettempdir())
    """
    folder = Path(os.path.realpath(Path(path).expanduser()))
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise WriteError(f"cannot write into {path}: {existing} is not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        action = "is not writable" if existing == folder else "cannot be created there"
        raise WriteError(f"cannot write into {path}: folder {existing} {action}.")


def _reason(error: BaseException) -> str:
    """A short reason for a failed write: the OS's wording, or torch's without its prefix."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    lines = str(error).strip().splitlines()
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", lines[0] if lines else "")
    return text or type(error).__name__


def _failure(path: str | Path, error: BaseException, recorded: OSError | None) -> WriteError:
    cause = recorded or error
    if isinstance(cause, OSError) and cause.errno in _FULL:
        fix = "free some disk space or write elsewhere"
    elif isinstance(cause, OSError):
        fix = "check the path and its permissions, or write elsewhere"
    else:
        fix = "is the disk full? free some space or write elsewhere"
    failure = WriteError(f"cannot write {path}: {_reason(cause)}; {fix}.")
    failure.errno = cause.errno if isinstance(cause, OSError) else None
    failure.reason = _reason(cause)
    return failure


def _write(stream: BinaryIO, content: Content) -> None:
    if isinstance(content, str):
        stream.write(content.encode())
    elif isinstance(content, bytes | bytearray | memoryview):
        stream.write(content)
    else:
        content(stream)


def _write_in_place(path: Path, content: Content, descriptor: int | None = None) -> None:
    """Devices, FIFOs, descriptors: no temporary file.

    A descriptor of this process is written at its own offset, after what Python
    printed to it; a device or FIFO is opened for appending.
    """
    raw = None
    try:
        if descriptor is not None:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            raw = _RecordingFile(os.dup(descriptor), "wb")
        else:
            raw = _RecordingFile(path, "ab")
        with io.BufferedWriter(raw) as stream:
            _write(stream, content)
    except (OSError, RuntimeError) as error:
        raise _failure(path, error, raw.error if raw else None) from None


def write_atomically(path: str | Path, content: Content, *, make_parents: bool = False) -> Path:
    """Write ``content`` to ``path`` through a temporary file in its folder and a rename.

    Args:
        path: the file; a symlink is written through, a device or FIFO in place.
        content: text, bytes, or ``write(stream)`` called with a binary stream.
        make_parents: create missing folders (with ``0o777 & ~umask``).

    Returns:
        The file written (a symlink's target).

    Raises:
        WriteError: the target is refused (folder, read-only file) or the write
            failed (full disk, no permission); nothing is left behind, the
            previous file is intact.

    Example:
        >>> write_atomically("/dev/null", "ignored")
        PosixPath('/dev/null')
    """
    target = Path(path).expanduser()
    descriptor = _descriptor(target)
    if descriptor is not None:
        _write_in_place(target, content, descriptor)
        return target
    real = Path(os.path.realpath(target))
    try:
        if make_parents:
            real.parent.mkdir(parents=True, exist_ok=True)
        info = _stat(real)
    except OSError as error:
        raise _failure(path, error, None) from None
    refusal = _refusal(target, real, info)
    if refusal:
        raise WriteError(refusal)
    if info is not None and not stat.S_ISREG(info.st_mode):
        _write_in_place(target, content)
        return real
    mode = stat.S_IMODE(info.st_mode) if info is not None else 0o666 & ~current_umask()

    raw = temporary = None
    try:
        handle, temporary = tempfile.mkstemp(
            dir=real.parent, prefix=f".{real.name}.", suffix=".tmp"
        )
        raw = _RecordingFile(handle, "wb")
        with io.BufferedWriter(raw) as stream:
            _write(stream, content)
            stream.flush()
            with contextlib.suppress(OSError):  # some file systems have no modes
                os.fchmod(raw.fileno(), mode)
            os.fsync(raw.fileno())
        os.replace(temporary, real)
    except BaseException as error:  # Ctrl-C and SIGTERM too: never leave the temporary file
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        if isinstance(error, OSError | RuntimeError) and not isinstance(error, WriteError):
            raise _failure(path, error, raw.error if raw else None) from None
        raise
    return real


def _fallback(path: Path, content: Content) -> Path:
    """Write ``content`` to a new private file in the temporary folder, named after ``path``."""
    raw = name = None
    try:
        handle, name = tempfile.mkstemp(prefix=f"gsmflow-{path.stem}-", suffix=path.suffix)
        raw = _RecordingFile(handle, "wb")
        with io.BufferedWriter(raw) as stream:
            _write(stream, content)
    except BaseException as error:
        if name is not None:
            with contextlib.suppress(OSError):
                os.unlink(name)
        if isinstance(error, OSError | RuntimeError):
            where = name or tempfile.gettempdir()
            raise _failure(where, error, raw.error if raw else None) from None
        raise
    return Path(name)


def write_with_fallback(path: str | Path, content: Content, *, make_parents: bool = False) -> Path:
    """:func:`write_atomically`, but finished results survive a failed write.

    If writing ``path`` fails, ``content`` goes to a new file in
    :func:`tempfile.gettempdir` named after it (``gsmflow-<name>-XXXX<suffix>``,
    mode 0600) and the :class:`WriteError` says where it is.

    Example:
        >>> write_with_fallback("/dev/null", b"results")
        PosixPath('/dev/null')
    """
    try:
        return write_atomically(path, content, make_parents=make_parents)
    except WriteError as error:
        first = str(error).rstrip(".")
        try:
            saved = _fallback(Path(path), content)
        except WriteError as again:
            raise WriteError(
                f"{first}; saving the results in {tempfile.gettempdir()} failed too "
                f"({again.reason or again})."
            ) from None
        raise WriteError(f"{first}; the results were saved to {saved} instead.") from None
