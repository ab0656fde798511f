"""download_dataset and ``gsmflow download`` end to end against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gsmflow_nflows.cli import main
from gsmflow_nflows.data import DatasetError, download_dataset, load_xlsa17, make_synthetic_gzsl


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes``; honours ``Range: bytes=N-`` unless ``server.ranges`` is off;
    cuts the next transfer after ``server.cut_after`` bytes when set (one shot)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        server = self.server
        server.log.append((self.path, self.headers.get("Range")))
        body = server.routes.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and server.ranges:
            start, status = int(match.group(1)), 206
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        payload = body[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes" if server.ranges else "none")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if server.cut_after is not None:
            payload, server.cut_after = payload[: server.cut_after], None
            self.close_connection = True
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes, httpd.log, httpd.ranges, httpd.cut_after = {}, [], True, None
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _official_zip(tmp_path: Path, extra: dict[str, bytes] | None = None) -> bytes:
    """A zip in the official layout xlsa17/data/<DATASET>/..., with tiny APY and AWA1."""
    src = tmp_path / "src"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("xlsa17/README.txt", "proposed splits")
        for i, name in enumerate(("APY", "AWA1")):
            make_synthetic_gzsl(src / name, num_classes=5, num_seen=3, attribute_dim=4,
                                feature_dim=16, train_per_class=20, test_seen_per_class=5,
                                test_unseen_per_class=8, seed=i)  # fmt: skip
            for f in sorted((src / name).iterdir()):
                zf.write(f, f"xlsa17/data/{name}/{f.name}")
        for member, data in (extra or {}).items():
            zf.writestr(member, data)
    return buffer.getvalue()


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_full_download_extracts_only_the_dataset(server, tmp_path):
    archive = _official_zip(tmp_path)
    server.routes["/xlsa17.zip"] = archive
    root, calls = tmp_path / "root", []
    folder = download_dataset("apy", root=root, url=f"{server.url}/xlsa17.zip",
                              progress=lambda d, t: calls.append((d, t)))  # fmt: skip
    assert folder == root / "APY"
    assert calls[-1] == (len(archive), len(archive))
    assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:], strict=False))
    assert load_xlsa17(root, "apy").num_seen == 3
    cached = [p for p in _tree(root) if p.startswith(".downloads/")]
    assert len(cached) == 1 and cached[0].endswith("-xlsa17.zip")
    assert sorted(set(_tree(root)) - set(cached)) == [
        ".downloads", "APY", "APY/att_splits.mat", "APY/res101.mat",
    ]  # fmt: skip
    # a second dataset from the same archive needs no second transfer
    n_requests = len(server.log)
    download_dataset("awa1", root=root, url=f"{server.url}/xlsa17.zip")
    assert len(server.log) == n_requests and (root / "AWA1" / "res101.mat").is_file()


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed", "restarted"])
def test_interrupted_download_resumes(server, tmp_path, ranges):
    archive = _official_zip(tmp_path)
    server.routes["/xlsa17.zip"], server.cut_after, server.ranges = archive, 3000, ranges
    root, url = tmp_path / "root", f"{server.url}/xlsa17.zip"
    with pytest.raises(DatasetError, match="run the same command again to resume") as info:
        download_dataset("apy", root=root, url=url)
    assert "\n" not in str(info.value)
    parts = [p for p in _tree(root) if p.endswith(".part")]
    assert len(parts) == 1 and (root / parts[0]).stat().st_size == 3000
    assert not (root / "APY").exists()
    download_dataset("apy", root=root, url=url)
    assert server.log[-1] == ("/xlsa17.zip", "bytes=3000-")
    cached = next(p for p in (root / ".downloads").iterdir())
    assert cached.read_bytes() == archive and not cached.name.endswith(".part")
    assert load_xlsa17(root, "APY").num_unseen == 2


def _assert_nothing_left(tmp_path: Path, root: Path) -> None:
    assert _tree(root) in ([], [".downloads"]) and not (root / ".downloads").exists()
    assert not list(tmp_path.rglob("evil*"))


def test_corrupt_archive_is_refused_and_removed(server, tmp_path):
    server.routes["/xlsa17.zip"] = np.random.default_rng(0).bytes(5000)
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="corrupt zip archive .* run the same command again"):
        download_dataset("apy", root=root, url=f"{server.url}/xlsa17.zip")
    _assert_nothing_left(tmp_path, root)


def test_damaged_member_data_is_refused(server, tmp_path):
    archive = bytearray(_official_zip(tmp_path))
    with zipfile.ZipFile(io.BytesIO(bytes(archive))) as zf:
        info = zf.getinfo("xlsa17/data/APY/res101.mat")
    # local header: 30 bytes + name + extra; then the compressed data, which we damage
    name_len, extra_len = np.frombuffer(archive, "<u2", 2, info.header_offset + 26)
    data_start = info.header_offset + 30 + int(name_len) + int(extra_len)
    middle = data_start + info.compress_size // 2
    archive[middle : middle + 64] = bytes(255 - b for b in archive[middle : middle + 64])
    server.routes["/xlsa17.zip"] = bytes(archive)
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="corrupt zip archive"):
        download_dataset("apy", root=root, url=f"{server.url}/xlsa17.zip")
    _assert_nothing_left(tmp_path, root)


@pytest.mark.parametrize(
    "member",
    ["xlsa17/data/APY/../../../../evil.txt", "../evil.txt", "/tmp/evil-abs.txt", "C:/evil.txt"],
)
def test_path_traversal_member_refuses_the_archive(server, tmp_path, member):
    server.routes["/xlsa17.zip"] = _official_zip(tmp_path, {member: b"owned"})
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="outside the target folder; refusing the archive"):
        download_dataset("apy", root=root, url=f"{server.url}/xlsa17.zip")
    _assert_nothing_left(tmp_path, root)
    assert not Path("/tmp/evil-abs.txt").exists()


def test_http_404(server, tmp_path):
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match=r"server answered HTTP 404 .*check the URL \(url=\)"):
        download_dataset("apy", root=root, url=f"{server.url}/missing.zip")
    _assert_nothing_left(tmp_path, root)


def test_checksum_mismatch_deletes_the_archive(server, tmp_path):
    archive = _official_zip(tmp_path)
    server.routes["/xlsa17.zip"] = archive
    root, url = tmp_path / "root", f"{server.url}/xlsa17.zip"
    with pytest.raises(DatasetError, match="SHA-256 .* does not match"):
        download_dataset("apy", root=root, url=url, sha256="0" * 64)
    _assert_nothing_left(tmp_path, root)
    good = hashlib.sha256(archive).hexdigest()
    assert download_dataset("apy", root=root, url=url, sha256=good, size=len(archive)).is_dir()


def test_archive_without_the_dataset(server, tmp_path):
    server.routes["/xlsa17.zip"] = _official_zip(tmp_path)
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="no SUN/att_splits.mat inside"):
        download_dataset("sun", root=root, url=f"{server.url}/xlsa17.zip")
    _assert_nothing_left(tmp_path, root)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_error_says_where_to_copy(tmp_path):
    root = tmp_path / "root"
    url = f"http://127.0.0.1:{_closed_port()}/xlsa17.zip"
    with pytest.raises(DatasetError) as info:
        download_dataset("apy", root=root, url=url, timeout=5)
    msg = str(info.value)
    assert msg.startswith("cannot reach 127.0.0.1") and "\n" not in msg
    assert f"copy its folder APY (res101.mat, att_splits.mat) to {root / 'APY'}" in msg
    _assert_nothing_left(tmp_path, root)


def test_unknown_dataset_and_bad_scheme(tmp_path):
    with pytest.raises(DatasetError, match="downloadable: apy, awa1"):
        download_dataset("imagenet", root=tmp_path)
    with pytest.raises(DatasetError, match="must be http"):
        download_dataset("apy", root=tmp_path, url="file:///etc/passwd")


def test_cli_download_and_datasets(server, tmp_path):
    server.routes["/xlsa17.zip"] = _official_zip(tmp_path)
    root = tmp_path / "root"
    runner = CliRunner()
    ok = runner.invoke(main, ["download", "apy", "--root", str(root), "--url",
                              f"{server.url}/xlsa17.zip"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert f"apy: ready in {root / 'APY'}" in ok.stdout and "MiB" in ok.stderr
    bad = runner.invoke(main, ["download", "apy", "--root", str(tmp_path / "r2"), "--url",
                               f"{server.url}/nothing.zip"])  # fmt: skip
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert bad.stderr.strip().splitlines()[-1].startswith("Error: http://127.0.0.1")
    table = runner.invoke(main, ["datasets", "--root", str(root)])
    assert table.exit_code == 0
    lines = {line.split()[0]: line for line in table.stdout.splitlines() if line[:1].isalpha()}
    # the tiny APY has 3/2 classes, so it is present but not the real APY: reported invalid
    assert "invalid" in lines["apy"] and lines["awa2"].endswith("missing")
    assert "32        20/12" in lines["synthetic"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_dataset_folders_follow_the_umask(server, tmp_path, umask):
    import os
    import stat

    from gsmflow_nflows.data.registry import _ensure_generated

    server.routes["/xlsa17.zip"] = _official_zip(tmp_path)
    previous = os.umask(umask)
    try:
        folder = download_dataset("apy", root=tmp_path / "root", url=f"{server.url}/xlsa17.zip")
        _ensure_generated(tmp_path / "root", "BUILT", lambda p: (p / "x").write_text("1"), "r")
    finally:
        os.umask(previous)
    for path in (folder, tmp_path / "root" / "BUILT"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700
