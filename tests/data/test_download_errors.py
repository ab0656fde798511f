"""``gsmflow download`` failures that escaped its error handling: each is now one ``Error:`` line,
the cached archive is removed when it is the cause (so a rerun downloads it again) and kept
when the local side is (so a rerun needs no new transfer)."""

from __future__ import annotations

import builtins
import errno
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gsmflow_nflows.cli import main
from gsmflow_nflows.data import DatasetError, download_dataset, load_xlsa17, make_synthetic_gzsl
from gsmflow_nflows.data import download as download_module
from tests.data import test_download
from tests.data.conftest import rewrite

server = test_download.server  # the HTTP server on 127.0.0.1 (a fixture)
_tree = test_download._tree


def _zip(tmp_path: Path, **apy_changes: np.ndarray) -> bytes:
    """The official layout xlsa17/data/APY/..., with ``apy_changes`` applied to att_splits.mat."""
    src = tmp_path / "src" / "APY"
    make_synthetic_gzsl(src, num_classes=5, num_seen=3, attribute_dim=4, feature_dim=16,
                        train_per_class=20, test_seen_per_class=5, test_unseen_per_class=8,
                        seed=0)  # fmt: skip
    if apy_changes:
        rewrite(src / "att_splits.mat", **apy_changes)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(src.iterdir()):
            zf.write(f, f"xlsa17/data/APY/{f.name}")
    return buffer.getvalue()


def _download(root: Path, url: str):
    return CliRunner().invoke(main, ["download", "apy", "--root", str(root), "--url", url])


def _one_error_line(result) -> str:
    """The run failed with exactly one ``Error:`` line (after the progress bar), no traceback."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert all(line == errors[0] or "MiB" in line for line in lines), result.stderr
    return errors[0]


def test_empty_index_vector_deletes_the_archive_and_a_rerun_succeeds(server, tmp_path):
    server.routes["/xlsa17.zip"] = _zip(tmp_path, test_unseen_loc=np.zeros((0, 1), np.int32))
    root, url = tmp_path / "root", f"{server.url}/xlsa17.zip"
    line = _one_error_line(_download(root, url))
    assert "att_splits.mat: key 'test_unseen_loc' is empty" in line and "check the URL" in line
    assert _tree(root) == []  # the archive is the cause: not cached, nothing extracted
    server.routes["/xlsa17.zip"] = _zip(tmp_path / "fixed")
    n_requests = len(server.log)
    ok = _download(root, url)
    assert ok.exit_code == 0, ok.output
    assert len(server.log) == n_requests + 1  # downloaded again
    assert load_xlsa17(root, "apy").num_unseen == 2


class _FullDisk(io.FileIO):
    """A file on a full disk: the first write stores half its bytes, then ENOSPC."""

    def write(self, data) -> int:
        super().write(bytes(data)[: max(1, len(data) // 2)])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _full_disk_for(monkeypatch, marker: str) -> None:
    """Writes through the download module's ``open`` to paths containing ``marker`` fail."""

    def fake_open(file, mode="r", *args, **kwargs):
        if marker in str(file) and ("w" in mode or "a" in mode):
            return _FullDisk(file, "ab" if "a" in mode else "wb")
        return builtins.open(file, mode, *args, **kwargs)

    monkeypatch.setattr(download_module, "open", fake_open, raising=False)


def test_full_disk_during_extraction_keeps_the_archive(server, tmp_path, monkeypatch):
    server.routes["/xlsa17.zip"] = _zip(tmp_path)
    root, url = tmp_path / "root", f"{server.url}/xlsa17.zip"
    _full_disk_for(monkeypatch, ".APY.tmp-")
    line = _one_error_line(_download(root, url))
    assert f"cannot extract APY into {root} (No space left on device)" in line
    assert "partly extracted files removed" in line and "kept" in line
    cached = _tree(root)  # the archive is fine: kept; the partial files are gone
    assert len(cached) == 2 and cached[1].startswith(".downloads/")
    assert cached[1].endswith("-xlsa17.zip")
    monkeypatch.undo()
    n_requests = len(server.log)
    ok = _download(root, url)
    assert ok.exit_code == 0, ok.output
    assert len(server.log) == n_requests  # extracted from the cached archive
    assert load_xlsa17(root, "apy").num_seen == 3


def test_full_disk_during_transfer_keeps_the_part_to_resume(server, tmp_path, monkeypatch):
    server.routes["/xlsa17.zip"] = archive = _zip(tmp_path)
    root, url = tmp_path / "root", f"{server.url}/xlsa17.zip"
    _full_disk_for(monkeypatch, ".part")
    line = _one_error_line(_download(root, url))
    assert "(No space left on device)" in line and "free disk space" in line
    assert "run the same command again to resume" in line
    (part,) = (root / ".downloads").iterdir()
    assert part.name.endswith(".part") and 0 < part.stat().st_size < len(archive)
    size = part.stat().st_size
    monkeypatch.undo()
    assert _download(root, url).exit_code == 0
    assert server.log[-1] == ("/xlsa17.zip", f"bytes={size}-")  # resumed
    assert load_xlsa17(root, "apy").num_seen == 3


def test_root_under_a_regular_file_is_one_error_naming_it(server, tmp_path):
    server.routes["/xlsa17.zip"] = _zip(tmp_path)
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    root = blocker / "sub"
    line = _one_error_line(_download(root, f"{server.url}/xlsa17.zip"))
    assert line == (
        f"Error: {root}: cannot use it as the data root ({blocker} is a file, not a folder); "
        f"pass root= a folder path you can write to"
    )
    assert server.log == [] and blocker.read_text() == "not a folder"
    with pytest.raises(DatasetError, match=f"{blocker} is a file"):
        download_dataset("apy", root=blocker, url=f"{server.url}/xlsa17.zip")


def test_file_in_place_of_the_dataset_folder(server, tmp_path):
    server.routes["/xlsa17.zip"] = _zip(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    (root / "APY").write_text("in the way")
    line = _one_error_line(_download(root, f"{server.url}/xlsa17.zip"))
    assert f"{root / 'APY'}: a file is in the way of the dataset folder" in line
    assert server.log == [] and (root / "APY").read_text() == "in the way"


def test_unsupported_compression_deletes_the_archive(server, tmp_path):
    archive = bytearray(_zip(tmp_path))
    with zipfile.ZipFile(io.BytesIO(bytes(archive))) as zf:
        infos = zf.infolist()
    end = archive.rindex(b"PK\x05\x06")  # end of central directory: its offset at +16
    entry = int(np.frombuffer(archive, "<u4", 1, end + 16)[0])
    deflate64 = (9).to_bytes(2, "little")  # a compression method zipfile cannot read
    for info in infos:
        archive[info.header_offset + 8 : info.header_offset + 10] = deflate64  # local header
        assert archive[entry : entry + 4] == b"PK\x01\x02"
        archive[entry + 10 : entry + 12] = deflate64  # central directory entry
        lengths = np.frombuffer(archive, "<u2", 3, entry + 28)  # name, extra, comment
        entry += 46 + int(lengths.sum())
    server.routes["/xlsa17.zip"] = bytes(archive)
    root = tmp_path / "root"
    line = _one_error_line(_download(root, f"{server.url}/xlsa17.zip"))
    assert "Python's zipfile cannot extract it" in line and "(deleted)" in line
    assert f"copy its APY folder (res101.mat, att_splits.mat) to {root / 'APY'}" in line
    assert _tree(root) == []


@pytest.mark.parametrize("name", ["digits", "Synthetic"])
def test_built_in_datasets_are_not_downloaded(tmp_path, name):
    result = CliRunner().invoke(main, ["download", name, "--root", str(tmp_path / "root")])
    line = _one_error_line(result)
    assert "is built in" in line and f"--dataset {name.lower()}" in line
    assert not (tmp_path / "root").exists()  # nothing made, nothing fetched
