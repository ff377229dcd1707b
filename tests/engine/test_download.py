"""Downloading model files from a real server on 127.0.0.1: the cache, the checks, and every failure cleaned up."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from engine.errors import ModelLoadError
from engine.models.download import checksum_path, fetch, model_cache_dir
from tests.engine.model_server import ModelServer, Reply

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # a few chunks, so a mid-stream failure is mid-stream
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>Link does not exist.</title></head><body>:(</body></html>\n"


def names_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_first_download_shows_progress_and_records_the_checksum(
    model_server: ModelServer, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = model_server.serve("/model.ckpt", Reply(PAYLOAD))
    path = fetch(url, model_dir / "model.ckpt")
    assert path.read_bytes() == PAYLOAD
    assert checksum_path(path).read_text().split()[0] == PAYLOAD_SHA256
    assert names_in(model_dir) == ["model.ckpt", "model.ckpt.sha256"]
    bar = capsys.readouterr().err
    assert "model.ckpt" in bar
    assert "100%" in bar


def test_progress_false_prints_nothing(
    model_server: ModelServer, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fetch(model_server.serve("/quiet.ckpt", Reply(PAYLOAD)), model_dir / "quiet.ckpt", progress=False)
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""


def test_a_cached_file_is_not_downloaded_again(model_server: ModelServer, model_dir: Path) -> None:
    url = model_server.serve("/model.ckpt", Reply(PAYLOAD))
    first = fetch(url, model_dir / "model.ckpt", progress=False)
    second = fetch(url, model_dir / "model.ckpt", progress=False)
    assert first == second
    assert model_server.hits["/model.ckpt"] == 1


def test_a_known_checksum_is_checked_on_download(model_server: ModelServer, model_dir: Path) -> None:
    url = model_server.serve("/clip.pt", Reply(PAYLOAD))
    path = fetch(url, model_dir / "clip.pt", sha256=PAYLOAD_SHA256, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_a_wrong_checksum_is_an_error_and_leaves_no_file(model_server: ModelServer, model_dir: Path) -> None:
    url = model_server.serve("/clip.pt", Reply(PAYLOAD))
    with pytest.raises(ModelLoadError, match="SHA-256"):
        fetch(url, model_dir / "clip.pt", sha256="0" * 64, progress=False, backoff_s=0)
    assert names_in(model_dir) == []


def test_a_truncated_download_is_retried_then_a_clean_error(model_server: ModelServer, model_dir: Path) -> None:
    url = model_server.serve("/model.ckpt", Reply(PAYLOAD, send_bytes=len(PAYLOAD) // 2))
    with pytest.raises(ModelLoadError, match=r"truncated.* of 3158073 bytes"):
        fetch(url, model_dir / "model.ckpt", progress=False, retries=2, backoff_s=0)
    assert model_server.hits["/model.ckpt"] == 3
    assert names_in(model_dir) == []


def test_a_server_error_is_retried_and_the_retry_succeeds(model_server: ModelServer, model_dir: Path) -> None:
    url = model_server.serve("/model.ckpt", Reply(b"busy", status=500, content_type="text/plain"), Reply(PAYLOAD))
    path = fetch(url, model_dir / "model.ckpt", progress=False, backoff_s=0)
    assert path.read_bytes() == PAYLOAD
    assert model_server.hits["/model.ckpt"] == 2


def test_a_persistent_server_error_gives_up_cleanly(model_server: ModelServer, model_dir: Path) -> None:
    url = model_server.serve("/model.ckpt", Reply(b"down", status=503, content_type="text/plain"))
    with pytest.raises(ModelLoadError, match=r"after 4 attempts: HTTP 503"):
        fetch(url, model_dir / "model.ckpt", progress=False, retries=3, backoff_s=0)
    assert model_server.hits["/model.ckpt"] == 4
    assert names_in(model_dir) == []


def test_a_missing_file_is_not_retried(model_server: ModelServer, model_dir: Path) -> None:
    url = model_server.serve("/gone.ckpt", Reply(b"no such file", status=404, content_type="text/plain"))
    with pytest.raises(ModelLoadError, match="HTTP 404"):
        fetch(url, model_dir / "gone.ckpt", progress=False, backoff_s=0)
    assert model_server.hits["/gone.ckpt"] == 1
    assert names_in(model_dir) == []


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/octet-stream"])
def test_an_html_page_instead_of_a_model_is_an_error(
    model_server: ModelServer, model_dir: Path, content_type: str
) -> None:
    url = model_server.serve("/model.yaml", Reply(HTML_PAGE, content_type=content_type))
    with pytest.raises(ModelLoadError, match="HTML page"):
        fetch(url, model_dir / "model.yaml", progress=False, backoff_s=0)
    assert names_in(model_dir) == []


def test_a_full_disk_mid_download_is_a_clean_error(
    model_server: ModelServer, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulate the kernel: writes into the cache directory fail with ENOSPC once 1 MiB is written.
    real_write = os.write
    written = 0

    def write_until_full(fd: int, data: bytes | memoryview) -> int:
        nonlocal written
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(model_dir)):
            if written >= 1 << 20:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written += len(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write_until_full)
    url = model_server.serve("/model.ckpt", Reply(PAYLOAD))
    with pytest.raises(ModelLoadError, match=r"disk .* is full"):
        fetch(url, model_dir / "model.ckpt", progress=False, backoff_s=0)
    assert written >= 1 << 20  # it really was mid-stream
    assert model_server.hits["/model.ckpt"] == 1  # a full disk is not worth a retry
    assert names_in(model_dir) == []


def test_a_file_larger_than_the_free_space_is_refused_before_writing(
    model_server: ModelServer, model_dir: Path
) -> None:
    url = model_server.serve("/huge.ckpt", Reply(PAYLOAD, content_length=1 << 62))
    with pytest.raises(ModelLoadError, match=r"disk .* is full"):
        fetch(url, model_dir / "huge.ckpt", progress=False, backoff_s=0)
    assert names_in(model_dir) == []


def test_a_changed_cached_file_fails_its_recorded_checksum(model_server: ModelServer, model_dir: Path) -> None:
    url = model_server.serve("/model.ckpt", Reply(PAYLOAD))
    path = fetch(url, model_dir / "model.ckpt", progress=False)
    with path.open("r+b") as fh:  # one flipped byte, same size
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelLoadError, match="recorded SHA-256"):
        fetch(url, path, progress=False)
    assert model_server.hits["/model.ckpt"] == 1


def test_a_cached_file_with_a_wrong_known_checksum_fails(model_server: ModelServer, model_dir: Path) -> None:
    model_dir.mkdir()
    (model_dir / "clip.pt").write_bytes(b"not the model")
    url = model_server.serve("/clip.pt", Reply(PAYLOAD))
    with pytest.raises(ModelLoadError, match="known SHA-256"):
        fetch(url, model_dir / "clip.pt", sha256=PAYLOAD_SHA256, progress=False)
    assert model_server.total_hits == 0


def test_an_unreachable_server_is_retried_then_a_clean_error(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "*")
    with socket.socket() as sock:  # a port on 127.0.0.1 that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ModelLoadError, match="after 2 attempts: cannot connect"):
        fetch(f"http://127.0.0.1:{port}/model.ckpt", model_dir / "model.ckpt", progress=False, retries=1, backoff_s=0)
    assert names_in(model_dir) == []


def test_the_cache_directory_is_chosen_when_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGINE_MODEL_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_cache_dir() == tmp_path / "xdg" / "vqbot" / "models"
    monkeypatch.setenv("ENGINE_MODEL_DIR", str(tmp_path / "env"))  # read at call time, not at import
    assert model_cache_dir() == tmp_path / "env"
    assert model_cache_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_processes_fetching_the_same_file_download_it_once(model_server: ModelServer, model_dir: Path) -> None:
    # Bot workers are separate processes; the slow server makes their downloads overlap unless one waits.
    url = model_server.serve("/shared.ckpt", Reply(PAYLOAD, pause_s=1.0))
    code = "import sys; from pathlib import Path; from engine.models.download import fetch; fetch(sys.argv[1], Path(sys.argv[2]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with ExitStack() as stack:
        workers = [
            stack.enter_context(
                subprocess.Popen([sys.executable, "-c", code, url, str(model_dir / "shared.ckpt")], cwd=ROOT, env=env)
            )
            for _ in range(2)
        ]
        assert [worker.wait(timeout=60) for worker in workers] == [0, 0]
    assert model_server.hits["/shared.ckpt"] == 1
    assert (model_dir / "shared.ckpt").read_bytes() == PAYLOAD
    assert names_in(model_dir) == ["shared.ckpt", "shared.ckpt.sha256"]
