"""Atomic output writes: symlinks, devices, descriptors, modes, refusals, failures, fallback."""

import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading

import pytest
import torch

from gsmflow_nflows.atomic_write import (
    WriteError,
    check_writable,
    check_writable_folder,
    current_umask,
    write_atomically,
    write_with_fallback,
)
from gsmflow_nflows.training.checkpoint import load_checkpoint, save_checkpoint


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


@pytest.fixture
def umask():
    """Set the umask for one test; the previous one comes back afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize(
    "mask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_new_files_and_folders_follow_the_umask(tmp_path, umask, mask, file_mode, folder_mode):
    umask(mask)
    assert current_umask() == mask
    target = tmp_path / "a" / "b" / "out.json"
    assert write_atomically(target, "{}", make_parents=True) == target
    assert target.read_text() == "{}"
    assert _mode(target) == file_mode
    assert _mode(tmp_path / "a") == _mode(tmp_path / "a" / "b") == folder_mode
    save_checkpoint(tmp_path / "c" / "ckpt.pt", {"iteration": 1})
    assert _mode(tmp_path / "c" / "ckpt.pt") == file_mode
    assert _mode(tmp_path / "c") == folder_mode


def test_an_existing_file_keeps_its_mode(tmp_path, umask):
    umask(0o077)
    target = tmp_path / "out.json"
    target.write_text("old")
    target.chmod(0o664)
    write_atomically(target, b"new")
    assert target.read_text() == "new" and _mode(target) == 0o664


def test_a_symlink_is_written_through(tmp_path):
    real = tmp_path / "real" / "out.json"
    real.parent.mkdir()
    real.write_text("old")
    real.chmod(0o640)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert write_atomically(link, "new") == real
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new" and _mode(real) == 0o640
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "real" / "later.json")
    write_atomically(dangling, "made")  # like `echo > dangling`: creates the target
    assert dangling.is_symlink() and (tmp_path / "real" / "later.json").read_text() == "made"
    assert _leftovers(tmp_path) == []


def test_a_read_only_file_is_refused(tmp_path):
    target = tmp_path / "keep.json"
    target.write_text("keep")
    target.chmod(0o444)
    for attempt in (lambda: check_writable(target), lambda: write_atomically(target, "x")):
        with pytest.raises(WriteError, match="read-only"):
            attempt()
    assert target.read_text() == "keep" and _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "make, phrase",
    [
        (lambda p: p.mkdir(), "it is a folder"),
        (lambda p: None, None),  # a new file in a writable folder is fine
    ],
    ids=["folder", "new-file"],
)
def test_check_writable(tmp_path, make, phrase):
    target = tmp_path / "out.json"
    make(target)
    if phrase is None:
        check_writable(target)
        return
    with pytest.raises(WriteError, match=phrase):
        check_writable(target)


def test_check_writable_missing_folder_and_file_as_folder(tmp_path):
    with pytest.raises(WriteError, match="does not exist"):
        check_writable(tmp_path / "none" / "out.json")
    (tmp_path / "file").write_text("")
    with pytest.raises(WriteError, match="not a folder"):
        check_writable_folder(tmp_path / "file" / "checkpoints")
    check_writable_folder(tmp_path / "new" / "checkpoints")  # can be created


def test_dev_null_is_written_in_place():
    check_writable("/dev/null")
    assert str(write_atomically("/dev/null", "ignored")) == "/dev/null"
    save_checkpoint("/dev/null", {"iteration": 1})
    assert os.path.exists("/dev/null") and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_fifo_is_written_in_place(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    write_atomically(fifo, b"through the pipe")
    reader.join(timeout=10)
    assert received == [b"through the pipe"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and _leftovers(tmp_path) == []


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="no /dev/fd")
def test_a_descriptor_is_written_at_its_offset(tmp_path):
    """/dev/stdout redirected to a file: appended after what was printed, not replacing it."""
    log = tmp_path / "log.txt"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, b"table\n")
        write_atomically(f"/dev/fd/{fd}", "json\n")
        os.write(fd, b"wrote\n")
    finally:
        os.close(fd)
    assert log.read_text() == "table\njson\nwrote\n"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError, OSError, KeyboardInterrupt])
def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path, error):
    target = tmp_path / "out.pt"
    target.write_text("old")

    def write(stream):
        stream.write(b"x" * 100_000)
        stream.flush()
        assert _leftovers(tmp_path)  # the temporary exists while writing
        raise error("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    expected = KeyboardInterrupt if error is KeyboardInterrupt else WriteError
    with pytest.raises(expected) as caught:
        write_atomically(target, write)
    if expected is WriteError:
        message = str(caught.value)
        assert message.startswith(f"cannot write {target}: ") and "\n" not in message
        assert "enforce fail" not in message
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_a_failing_checkpoint_write_is_a_write_error(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"iteration": 1})

    def full_disk(obj, stream):
        stream.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(WriteError, match=f"cannot write {path}: unexpected pos"):
        save_checkpoint(path, {"iteration": 2})
    monkeypatch.undo()
    assert load_checkpoint(path, expect={})["iteration"] == 1  # the previous one is intact
    assert _leftovers(tmp_path) == []


def test_fallback_keeps_the_results_and_says_where(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "spare"))
    (tmp_path / "spare").mkdir()
    with pytest.raises(WriteError) as caught:
        write_with_fallback(tmp_path / "none" / "results.json", '{"H": 0.5}')
    message = str(caught.value)
    saved = message.split("the results were saved to ")[1].removesuffix(" instead.")
    assert saved.startswith(str(tmp_path / "spare" / "gsmflow-results-"))
    assert saved.endswith(".json")
    assert open(saved).read() == '{"H": 0.5}'
    assert "No such file or directory" in message and "\n" not in message


_FULL_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    import torch
    from gsmflow_nflows.atomic_write import WriteError, write_with_fallback
    from gsmflow_nflows.training.checkpoint import save_checkpoint

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
    for attempt in (
        lambda: save_checkpoint(sys.argv[1] + "/ckpt.pt", {"x": torch.zeros(10_000)}),
        lambda: write_with_fallback(sys.argv[1] + "/out.json", "x" * 10_000),
    ):
        try:
            attempt()
        except WriteError as error:
            print(error)
    """
)


def test_a_full_disk_is_reported_with_its_reason(tmp_path):
    """RLIMIT_FSIZE as a full disk: torch's cryptic RuntimeError becomes the OS's reason."""
    spare = tmp_path / "spare"
    spare.mkdir()
    env = {**os.environ, "TMPDIR": str(spare), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    checkpoint, results = done.stdout.splitlines()
    assert checkpoint.startswith(f"cannot write {tmp_path}/ckpt.pt: File too large; free")
    assert results.startswith(f"cannot write {tmp_path}/out.json: File too large")
    assert "failed too (File too large)" in results  # the fallback hits the same limit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spare"]
    assert list(spare.iterdir()) == []
