"""Safe download of a known dataset: resumable, atomic, verified, extracted without escapes.

Only the standard library is used (``urllib``, ``zipfile``). The archive is fetched into
``<root>/.downloads/`` as ``<name>.part`` (appended to with an HTTP ``Range`` request when a
previous transfer was cut and the server allows it), renamed when complete, then only the
requested dataset's folder is extracted into a temporary folder, checked and renamed into
place. Archives are kept in ``.downloads`` so that the other xlsa17 datasets need no second
transfer.
"""

from __future__ import annotations

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
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np
import scipy.io

from gsmflow_nflows.data.errors import DatasetError
from gsmflow_nflows.data.registry import KNOWN_DATASETS, default_data_root
from gsmflow_nflows.data.validation import read_mat
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


def _fetch(
    url: str,
    dest: Path,
    *,
    progress: ProgressCallback | None,
    timeout: float,
    offline_hint: str,
    _retry: bool = True,
) -> None:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming that file if present."""
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "gsmflow-nflows"}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (scheme checked)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and start and _retry:  # stale partial file: start over
            part.unlink()
            return _fetch(url, dest, progress=progress, timeout=timeout,
                          offline_hint=offline_hint, _retry=False)  # fmt: skip
        raise DatasetError(
            f"{url}: server answered HTTP {exc.code} {exc.reason}; check the URL (--url)"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        host = urllib.parse.urlparse(url).hostname
        raise DatasetError(f"cannot reach {host} ({reason}); {offline_hint}") from exc

    with response:
        total = None
        mode = "wb"
        done = 0
        if response.status == 206 and start:
            match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != start:
                if not _retry:
                    raise DatasetError(f"{url}: server sent a bad Content-Range; try again later")
                response.close()
                part.unlink()
                return _fetch(url, dest, progress=progress, timeout=timeout,
                              offline_hint=offline_hint, _retry=False)  # fmt: skip
            total = None if match.group(2) == "*" else int(match.group(2))
            mode, done = "ab", start
        else:  # 200: the server ignored the range (or there was none): start over
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(part, mode) as out:
                if progress is not None:
                    progress(done, total)
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except (OSError, ValueError, http.client.HTTPException) as exc:  # cut, reset, timeout
            raise _Interrupted(
                f"download of {url} interrupted after {done} bytes ({type(exc).__name__}); "
                f"run the same command again to resume from {part}"
            ) from exc
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
        if key != "att" and np.asarray(mat[key]).max() > n:
            raise DatasetError(f"{label}: {key} points past the {n} images; check the URL")


def _extract(archive: Path, folder: str, target: Path) -> None:
    """Extract the archive's ``<folder>/`` (at any depth) into ``target`` atomically."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [(m, _member_parts(m, archive)) for m in zf.infolist()]
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
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.tmp-", dir=target.parent))
            try:
                base = tmp.resolve()
                for member, parts in members:
                    if member.is_dir() or parts[: len(prefix)] != prefix:
                        continue
                    out = tmp.joinpath(*parts[len(prefix) :])
                    if base not in out.resolve().parents:
                        raise DatasetError(
                            f"{archive.name}: member {member.filename!r} escapes the target "
                            f"folder; refusing the archive (deleted), check the URL"
                        )
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
                _check_layout(tmp, f"{archive.name}:{'/'.join(prefix)}")
                if target.exists():
                    shutil.rmtree(target)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        archive.unlink(missing_ok=True)
        raise DatasetError(
            f"{archive.name}: corrupt zip archive ({exc}) (deleted); run the same command again"
        ) from exc
    except DatasetError:
        archive.unlink(missing_ok=True)
        raise


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
    (absolute, ``..``, symlink) makes the whole archive refused. On any failure except an
    interrupted transfer nothing is left behind; an interrupted transfer keeps its ``.part``.

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
            unverifiable transfer, corrupt or unsafe archive, wrong layout.

    Example:
        >>> download_dataset("apy", root="/data/gsmflow")  # doctest: +SKIP
        PosixPath('/data/gsmflow/APY')
    """
    key = name.strip().lower()
    if key not in KNOWN_DATASETS:
        raise DatasetError(
            f"unknown dataset {name!r}; downloadable: {', '.join(KNOWN_DATASETS)} "
            f"(a dataset of your own: copy its folder into the data root)"
        )
    info = KNOWN_DATASETS[key]
    root_dir = Path(root).expanduser() if root is not None else default_data_root()
    target = root_dir / info.folder
    if (target / FEATURES_FILE).is_file() and (target / "att_splits.mat").is_file() and not force:
        return target
    source = url or info.url
    if not source or urllib.parse.urlparse(source).scheme not in ("http", "https"):
        raise DatasetError(f"{name}: download URL must be http(s), got {source!r}; pass --url")
    offline_hint = (
        f"without network access, fetch {source} on another machine and copy its folder "
        f"{info.folder} (res101.mat, att_splits.mat) to {target}"
    )
    cache = root_dir / _DOWNLOADS
    archive = _archive_path(cache, source)
    try:
        if not archive.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            _fetch(source, archive, progress=progress, timeout=timeout, offline_hint=offline_hint)
            _verify_archive(archive, size=size, sha256=sha256 or info.sha256)
        _extract(archive, info.folder, target)
    finally:
        if cache.is_dir() and not any(cache.iterdir()):
            cache.rmdir()
    return target
