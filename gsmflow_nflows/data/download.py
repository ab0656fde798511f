"""Safe download of a known dataset: resumable, atomic, verified, extracted without escapes.

Only the standard library is used (``urllib``, ``zipfile``). The archive is fetched into
``<root>/.downloads/`` as ``<name>.part`` (appended to with an HTTP ``Range`` request when a
previous transfer was cut and the server allows it), renamed when complete, then only the
requested dataset's folder is extracted into a temporary folder, checked and renamed into
place. Archives are kept in ``.downloads`` so that the other xlsa17 datasets need no second
transfer.

Every failure is one DatasetError line. The cached archive is deleted when it is the cause
(corrupt, unsafe, unsupported or of the wrong layout, so that a rerun downloads it again) and
kept when the local side is (a full disk or an unwritable folder, so that a rerun needs no
new transfer); partly extracted files are always removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
import scipy.io

from gsmflow_nflows.atomic_write import current_umask
from gsmflow_nflows.data.errors import DatasetError
from gsmflow_nflows.data.registry import (
    DIGITS_INFO,
    KNOWN_DATASETS,
    SYNTHETIC_INFO,
    default_data_root,
)
from gsmflow_nflows.data.validation import index_vector, read_mat
from gsmflow_nflows.data.xlsa17 import FEATURES_FILE

__all__ = ["ProgressCallback", "download_dataset"]

#: ``progress(bytes_done, bytes_total_or_None)``, called as bytes arrive.
ProgressCallback = Callable[[int, "int | None"], None]
_CHUNK = 1 << 16
_DOWNLOADS = ".downloads"


def _archive_path(cache: Path, url: str) -> Path:
    base = PurePosixPath(urllib.parse.urlparse(url).path).name or "archive.zip"
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base)
    return cache / f"{hashlib.sha1(url.encode()).hexdigest()[:10]}-{base}"


class _Interrupted(DatasetError):
    """A transfer cut mid-way; the partial file is kept for resuming."""


def _reason(exc: OSError) -> str:
    """``No space left on device: /path``: an OSError in words, without the errno prefix."""
    what = exc.strerror or str(exc) or type(exc).__name__
    return f"{what}: {exc.filename}" if exc.filename else what


def _make_dirs(path: Path, root: Path) -> None:
    """Create ``path`` (inside the data root ``root``), or say in one line why it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else _reason(exc)
        raise DatasetError(
            f"{root}: cannot use it as the data root ({why}); pass root= a folder "
            f"path you can write to"
        ) from exc


def _open(
    url: str, start: int, *, timeout: float, offline_hint: str, restart_on_416: bool
) -> http.client.HTTPResponse | None:
    """The server's response to a GET of ``url`` from byte ``start`` on.

    ``None`` when the server answers 416 (range not satisfiable) and ``restart_on_416``:
    the partial file is stale and the transfer has to start over.
    """
    headers = {"User-Agent": "gsmflow-nflows"}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (scheme checked)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and restart_on_416:
            return None
        raise DatasetError(
            f"{url}: server answered HTTP {exc.code} {exc.reason}; check the URL (url=)"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        host = urllib.parse.urlparse(url).hostname
        raise DatasetError(f"cannot reach {host} ({reason}); {offline_hint}") from exc


def _body_range(
    response: http.client.HTTPResponse, start: int, url: str, *, may_restart: bool
) -> tuple[int, int | None] | None:
    """``(first byte, total size or None)`` of the body the server is sending.

    A 206 answer continues the partial file at ``start``; any other answer (the server
    ignored the range, or there was none) starts at 0. ``None`` when a 206 answer's
    ``Content-Range`` does not continue the partial file and ``may_restart``.
    """
    if response.status == 206 and start:
        match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != start:
            if not may_restart:
                raise DatasetError(f"{url}: server sent a bad Content-Range; try again later")
            return None
        return start, None if match.group(2) == "*" else int(match.group(2))
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _write_body(
    response: http.client.HTTPResponse,
    part: Path,
    done: int,
    total: int | None,
    url: str,
    progress: ProgressCallback | None,
) -> int:
    """Write the body to ``part`` (appended to when ``done`` bytes are already there).

    Returns:
        The size of ``part`` afterwards.
    """
    try:
        with open(part, "ab" if done else "wb") as out:
            if progress is not None:
                progress(done, total)
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, ValueError, http.client.HTTPException) as exc:  # cut, reset
                    raise _Interrupted(
                        f"download of {url} interrupted after {done} bytes "
                        f"({type(exc).__name__}); run the same command again to resume "
                        f"from {part}"
                    ) from exc
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except OSError as exc:  # the local side: full disk, unwritable folder
        raise _Interrupted(
            f"cannot write {part} ({_reason(exc)}) after {done} bytes; free disk space "
            f"there and run the same command again to resume"
        ) from exc
    return done


def _fetch(
    url: str,
    dest: Path,
    *,
    progress: ProgressCallback | None,
    timeout: float,
    offline_hint: str,
    _retry: bool = True,
) -> None:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming that file if present.

    A partial file the server cannot continue is deleted and the transfer started over,
    once.
    """
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0

    def start_over() -> None:
        part.unlink()
        _fetch(
            url, dest, progress=progress, timeout=timeout, offline_hint=offline_hint, _retry=False
        )

    response = _open(
        url,
        start,
        timeout=timeout,
        offline_hint=offline_hint,
        restart_on_416=bool(start) and _retry,
    )
    if response is None:
        return start_over()
    with response:
        body = _body_range(response, start, url, may_restart=_retry)
        if body is None:
            response.close()
            return start_over()
        first, total = body
        done = _write_body(response, part, first, total, url, progress)
    if total is not None and done != total:
        raise _Interrupted(
            f"download of {url} stopped after {done} of {total} bytes; "
            f"run the same command again to resume from {part}"
        )
    os.replace(part, dest)


def _verify_archive(path: Path, *, size: int | None, sha256: str | None) -> None:
    if size is not None and path.stat().st_size != size:
        got = path.stat().st_size
        path.unlink()
        raise DatasetError(f"{path.name}: {got} bytes, expected {size} (deleted); run again")
    if sha256 is not None:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != sha256.lower():
            path.unlink()
            raise DatasetError(
                f"{path.name}: SHA-256 {digest.hexdigest()[:12]}... does not match the expected "
                f"{sha256[:12]}... (deleted); check the URL or run again"
            )


def _member_parts(info: zipfile.ZipInfo, archive: Path) -> tuple[str, ...]:
    """Path components of a member, refusing any that could escape the extraction folder."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
    if (
        name.startswith("/")
        or re.match(r"^[A-Za-z]:", name)
        or ".." in parts
        or any(p in ("", ".") for p in name.rstrip("/").split("/")[1:])
        or is_link
    ):
        raise DatasetError(
            f"{archive.name}: member {info.filename!r} would be written outside the target "
            f"folder; refusing the archive (deleted), check the URL"
        )
    return parts


def _check_layout(folder: Path, label: str) -> None:
    """The extracted folder holds readable xlsa17 files whose indices fit the features."""
    feat, splits = folder / FEATURES_FILE, folder / "att_splits.mat"
    for path in (feat, splits):
        if not path.is_file():
            raise DatasetError(f"{label}: {path.name} missing from the archive; check the URL")
    try:
        shapes = {n: s for n, s, _ in scipy.io.whosmat(str(feat))}
    except Exception as exc:
        raise DatasetError(f"{label}: {FEATURES_FILE} is unreadable; check the URL") from exc
    if "features" not in shapes or "labels" not in shapes:
        raise DatasetError(f"{label}: {FEATURES_FILE} lacks 'features'/'labels'; check the URL")
    n = int(np.prod(shapes["labels"]))
    mat = read_mat(splits, fix="check the URL")
    for key in ("att", "trainval_loc", "test_seen_loc", "test_unseen_loc"):
        if key not in mat:
            raise DatasetError(f"{label}: att_splits.mat lacks {key!r}; check the URL")
        if key == "att":
            continue
        try:  # empty, non-integer, 0-based, out-of-range or repeated indices
            index_vector(mat, key, Path(label) / splits.name, length=n, what="the images")
        except DatasetError as exc:
            raise DatasetError(f"{exc}; the archive is refused (deleted), check the URL") from exc


def _copy_member(src: IO[bytes], out: Path) -> None:
    """Write an opened member to ``out``.

    A failed read is the archive's fault and raises ``zipfile.BadZipFile`` (or zlib's and
    EOF errors, as zipfile does); a failed write (full disk, unwritable folder) is the local
    side's and raises ``OSError``.
    """
    with open(out, "wb") as dst:
        while True:
            try:
                chunk = src.read(_CHUNK)
            except OSError as exc:
                raise zipfile.BadZipFile(f"unreadable member ({exc})") from exc
            if not chunk:
                break
            dst.write(chunk)


def _dataset_prefix(
    members: list[tuple[zipfile.ZipInfo, tuple[str, ...]]], folder: str, archive: Path
) -> tuple[str, ...]:
    """Path components of the archive's ``<folder>/`` (at any depth, any case).

    It is the first folder named ``folder`` that holds an ``att_splits.mat``.
    """
    prefix = next(
        (
            parts[:-1]
            for _, parts in members
            if len(parts) >= 2
            and parts[-1] == "att_splits.mat"
            and parts[-2].lower() == folder.lower()
        ),
        None,
    )
    if prefix is None:
        raise DatasetError(
            f"{archive.name}: no {folder}/att_splits.mat inside, so it does not hold "
            f"{folder} (deleted); check the URL"
        )
    return prefix


def _extract_members(
    zf: zipfile.ZipFile,
    members: list[tuple[zipfile.ZipInfo, tuple[str, ...]]],
    prefix: tuple[str, ...],
    into: Path,
    archive: Path,
) -> None:
    """Write the files under ``prefix`` into the folder ``into``, without that prefix."""
    base = into.resolve()
    for member, parts in members:
        if member.is_dir() or parts[: len(prefix)] != prefix:
            continue
        out = into.joinpath(*parts[len(prefix) :])
        if base not in out.resolve().parents:
            raise DatasetError(
                f"{archive.name}: member {member.filename!r} escapes the target "
                f"folder; refusing the archive (deleted), check the URL"
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(member) as src:
            _copy_member(src, out)


@contextlib.contextmanager
def _extraction_errors(archive: Path, folder: str, target: Path) -> Iterator[None]:
    """Turn a failed extraction into one DatasetError, deleting the archive if it is the cause.

    The archive is the cause of corrupt data, unsupported compression or encryption and
    every DatasetError (unsafe member, wrong layout); the local side is of an OSError
    (full disk, unwritable folder), which keeps the archive.
    """
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        archive.unlink(missing_ok=True)
        raise DatasetError(
            f"{archive.name}: corrupt zip archive ({exc}) (deleted); run the same command again"
        ) from exc
    except RuntimeError as exc:  # NotImplementedError: unsupported compression; encryption
        archive.unlink(missing_ok=True)
        raise DatasetError(
            f"{archive.name}: Python's zipfile cannot extract it ({exc}) (deleted); unpack it "
            f"by hand and copy its {folder} folder (res101.mat, att_splits.mat) to {target}"
        ) from exc
    except DatasetError:
        archive.unlink(missing_ok=True)
        raise
    except OSError as exc:  # the local side: full disk, read-only or unwritable folder
        raise DatasetError(
            f"cannot extract {folder} into {target.parent} ({_reason(exc)}); partly extracted "
            f"files removed, the downloaded {archive} kept: free disk space or fix permissions "
            f"and run the same command again"
        ) from exc


def _extract(archive: Path, folder: str, target: Path) -> None:
    """Extract the archive's ``<folder>/`` (at any depth) into ``target`` atomically.

    Partly extracted files are always removed. The archive is deleted when it is the cause
    (corrupt data, unsafe member, unsupported compression or encryption, wrong layout) and
    kept when the local side is (an OSError while writing: full disk, unwritable folder).
    """
    with _extraction_errors(archive, folder, target), zipfile.ZipFile(archive) as zf:
        members = [(m, _member_parts(m, archive)) for m in zf.infolist()]
        prefix = _dataset_prefix(members, folder, archive)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.tmp-", dir=target.parent))
        try:
            _extract_members(zf, members, prefix, tmp, archive)
            _check_layout(tmp, f"{archive.name}:{'/'.join(prefix)}")
            if target.exists():
                shutil.rmtree(target)
            os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp made it 0700
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def download_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    url: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 60.0,
    force: bool = False,
) -> Path:
    """Download a known dataset's archive and extract that dataset's folder into ``root``.

    Safe by construction: the transfer goes to ``<root>/.downloads/<archive>.part`` and is
    renamed when complete; a cut transfer is resumed by the next call (HTTP ``Range``) when the
    server supports it, else restarted; size and SHA-256 are checked when known; only the
    dataset's folder is extracted, into a temporary folder that is checked (files, keys, index
    ranges) and then renamed to ``<root>/<FOLDER>``; any member that could escape the target
    (absolute, ``..``, symlink) makes the whole archive refused. On any failure nothing
    extracted is left behind; the cached archive is deleted when it is the cause (corrupt,
    unsafe, unsupported, wrong layout or index vectors, checksum mismatch) and kept when the
    local side is (full disk, unwritable folder: a rerun extracts it without a new transfer);
    an interrupted transfer, or one stopped by a full disk, keeps its ``.part`` for resuming.

    Args:
        name: Known dataset name (``apy``, ``awa1``, ``awa2``, ``cub``, ``sun``, ``flo``).
        root: Data root; default ``default_data_root()`` (``$GSMFLOW_DATA`` or
            ``~/.cache/gsmflow``).
        url: Override of the archive URL (http or https), e.g. a mirror.
        sha256: Expected SHA-256 of the archive; default the dataset's, if known.
        size: Expected archive size in bytes, if known.
        progress: ``progress(bytes_done, bytes_total_or_None)`` callback; the library prints
            nothing itself.
        timeout: Socket timeout in seconds.
        force: Replace the dataset folder even if it is already there.

    Returns:
        The dataset folder, ``<root>/<FOLDER>``.

    Raises:
        DatasetError: Unknown name, unreachable server (offline), HTTP error, interrupted or
            unverifiable transfer, corrupt or unsafe archive, wrong layout or empty or bad
            index vectors, a data root that cannot be created (e.g. under a file), a full disk
            or unwritable folder.

    Example:
        >>> download_dataset("apy", root="/data/gsmflow")  # doctest: +SKIP
        PosixPath('/data/gsmflow/APY')
    """
    key = name.strip().lower()
    if key in (DIGITS_INFO.name, SYNTHETIC_INFO.name):
        raise DatasetError(
            f"{key!r} is built in: it is generated on first use, nothing to download; "
            f"use it directly: load_dataset({key!r}), or `gsmflow bench --dataset {key}`"
        )
    if key not in KNOWN_DATASETS:
        raise DatasetError(
            f"unknown dataset {name!r}; downloadable: {', '.join(KNOWN_DATASETS)} "
            f"(a dataset of your own: copy its folder into the data root)"
        )
    info = KNOWN_DATASETS[key]
    root_dir = Path(root).expanduser() if root is not None else default_data_root()
    try:
        target = root_dir / info.folder
        if (
            (target / FEATURES_FILE).is_file()
            and (target / "att_splits.mat").is_file()
            and not force
        ):
            return target
        source = url or info.url
        if not source or urllib.parse.urlparse(source).scheme not in ("http", "https"):
            raise DatasetError(
                f"{name}: download URL must be http(s), got {source!r}; pass url= an http(s) URL"
            )
        offline_hint = (
            f"without network access, fetch {source} on another machine and copy its folder "
            f"{info.folder} (res101.mat, att_splits.mat) to {target}"
        )
        if target.exists() and not target.is_dir():
            raise DatasetError(
                f"{target}: a file is in the way of the dataset folder; move it away and run again"
            )
        cache = root_dir / _DOWNLOADS
        archive = _archive_path(cache, source)
        try:
            if not archive.is_file():
                _make_dirs(cache, root_dir)
                _fetch(
                    source, archive, progress=progress, timeout=timeout, offline_hint=offline_hint
                )
                _verify_archive(archive, size=size, sha256=sha256 or info.sha256)
            _extract(archive, info.folder, target)
        finally:
            if cache.is_dir() and not any(cache.iterdir()):
                cache.rmdir()
        return target
    except OSError as exc:  # a local failure not worded above (e.g. a folder one cannot read)
        raise DatasetError(
            f"{key}: {_reason(exc)}; check that the data root {root_dir} is a folder you can "
            "read and write, and that the disk has free space"
        ) from exc
