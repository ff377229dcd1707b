"""Model downloads into a cache directory: streamed, verified, atomic, retried.

A file appears under its final name only when it arrived whole and passed its checks; every failure
removes the temporary file. Without a known SHA-256, the hash of the first download is recorded in a
sidecar file (`<name>.sha256`) and every later load checks the cached file against it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import platformdirs
from tqdm import tqdm

from engine.errors import ModelLoadError

log = logging.getLogger(__name__)

ENV_MODEL_DIR = "ENGINE_MODEL_DIR"
USER_AGENT = "vqbot-model-download/0.1"
CHUNK_BYTES = 1 << 20
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<!--")
_RETRY_HTTP_CODES = frozenset({408, 425, 429})  # plus every 5xx

_dest_locks: dict[Path, threading.Lock] = {}
_dest_locks_guard = threading.Lock()


class _Transient(Exception):
    """A failure worth another attempt (connection trouble, 5xx, a truncated body)."""


def model_cache_dir(model_dir: str | os.PathLike[str] | None = None) -> Path:
    """The model cache: `model_dir` if given, else $ENGINE_MODEL_DIR, else the user cache dir (read now)."""
    if model_dir is not None:
        return Path(model_dir).expanduser()
    env = os.environ.get(ENV_MODEL_DIR)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("vqbot")) / "models"


def checksum_path(dest: Path) -> Path:
    """Where the SHA-256 recorded at first download of `dest` is kept."""
    return dest.with_name(dest.name + ".sha256")


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            hasher.update(chunk)
    return hasher.hexdigest()


def fetch(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    progress: bool = True,
    retries: int = 3,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
) -> Path:
    """`dest`, downloaded from `url` unless already cached, and verified; ModelLoadError on any failure.

    `retries` is the number of extra attempts after the first; waits grow as backoff_s, 2·backoff_s, …
    """
    dest = Path(dest)
    with _lock_for(dest):
        if not dest.exists():
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ModelLoadError(f"cannot create the model directory {dest.parent}: {exc}") from exc
            with _directory_lock(dest.parent):
                if not dest.exists():  # another process may have fetched it while we waited
                    digest = _download_with_retries(url, dest, sha256, progress, retries, backoff_s, timeout_s)
                    if sha256 is None:
                        _record_checksum(dest, digest)
                    return dest
        verify_cached(dest, sha256=sha256)
        return dest


class ChecksumState(StrEnum):
    """What a cached file's bytes say against its checksum."""

    VERIFIED = "verified"  # they match the SHA-256 known in advance (OpenAI's, for CLIP)
    RECORDED = "recorded-at-first-download"  # they match the SHA-256 recorded when the file was downloaded
    UNKNOWN = "unknown"  # there is nothing to compare them with: no SHA-256 known or recorded
    MISMATCH = "mismatch"


@dataclass(frozen=True, slots=True)
class FileCheck:
    """One cached file, hashed again and compared with what it should be."""

    path: Path
    state: ChecksumState
    expected: str | None  # None when nothing is known or recorded
    actual: str
    known: bool  # whether `expected` was known in advance rather than recorded at the first download

    def mismatch(self) -> str:
        """The one line that says which file changed, and what to do about it."""
        return (
            f"the cached file {self.path} does not match its {'known' if self.known else 'recorded'} SHA-256 "
            f"(expected {(self.expected or '')[:16]}…, found {self.actual[:16]}…): it changed after it was "
            "downloaded; delete it to download it again"
        )


def check_file(dest: Path, *, sha256: str | None = None) -> FileCheck:
    """Hash a cached file again and compare it with its known SHA-256, else the one recorded at its first download."""
    expected = sha256.lower() if sha256 else None
    recorded = checksum_path(dest)
    if expected is None and recorded.exists():
        text = recorded.read_text(encoding="ascii", errors="replace").split()
        expected = text[0].lower() if text else ""
    try:
        actual = file_sha256(dest)
    except OSError as exc:
        raise ModelLoadError(f"cannot read the cached file {dest}: {exc}") from exc
    if expected is None:
        state = ChecksumState.UNKNOWN
    elif actual != expected:
        state = ChecksumState.MISMATCH
    else:
        state = ChecksumState.VERIFIED if sha256 else ChecksumState.RECORDED
    return FileCheck(dest, state, expected, actual, known=bool(sha256))


def verify_cached(dest: Path, *, sha256: str | None = None) -> None:
    """Check a cached file against its known SHA-256, or else the one recorded at its first download."""
    check = check_file(dest, sha256=sha256)
    if check.state is ChecksumState.UNKNOWN:  # placed there by hand (or by an older version): trusted from now on
        log.info("recording the SHA-256 of %s, which has none yet", dest)
        _record_checksum(dest, check.actual)
    elif check.state is ChecksumState.MISMATCH:
        raise ModelLoadError(check.mismatch())


def fetch_first(urls: tuple[str, ...], dest: Path, *, sha256: str | None = None, progress: bool = True) -> Path:
    """`dest` from the first of `urls` that works (a main URL, then its mirrors), as `fetch` gives it.

    A cached file that fails its checksum is not fetched again from elsewhere.
    """
    problems = []
    for url in urls:
        try:
            return fetch(url, dest, sha256=sha256, progress=progress)
        except ModelLoadError as exc:
            if dest.exists() or len(urls) == 1:
                raise
            log.warning("%s; trying the next mirror", exc)
            problems.append(str(exc))
    raise ModelLoadError(f"no mirror of {dest.name} worked: " + " | ".join(problems))


def _record_checksum(dest: Path, digest: str) -> None:
    try:
        _write_atomically(checksum_path(dest), f"{digest}  {dest.name}\n".encode())
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _disk_full(dest, exc) from exc
        raise ModelLoadError(f"cannot record the checksum of {dest}: {exc}") from exc


def _lock_for(dest: Path) -> threading.Lock:
    with _dest_locks_guard:
        return _dest_locks.setdefault(dest.resolve(), threading.Lock())


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    # Bot workers are separate processes: one downloads, the others wait and then find the file.
    # flock on the directory itself leaves no lock file behind.
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _download_with_retries(
    url: str, dest: Path, sha256: str | None, progress: bool, retries: int, backoff_s: float, timeout_s: float
) -> str:
    attempts = max(0, retries) + 1
    last_problem = ""
    for attempt in range(attempts):
        try:
            return _download_once(url, dest, sha256, progress, timeout_s)
        except _Transient as exc:
            last_problem = str(exc)
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the response's socket
            if exc.code < 500 and exc.code not in _RETRY_HTTP_CODES:
                raise ModelLoadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
            last_problem = f"HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, OSError) and exc.reason.errno == errno.ENOSPC:
                raise _disk_full(dest, exc.reason) from exc
            last_problem = f"cannot connect: {exc.reason}"
        except (ConnectionError, TimeoutError, http.client.HTTPException) as exc:
            last_problem = f"connection failed: {exc!r}"
        except OSError as exc:  # our side: the cache directory, not the network
            if exc.errno == errno.ENOSPC:
                raise _disk_full(dest, exc) from exc
            raise ModelLoadError(f"cannot write {dest}: {exc}") from exc
        if attempt + 1 < attempts:
            delay = backoff_s * 2**attempt
            log.warning("download of %s failed (%s); attempt %d of %d in %.1f s", url, last_problem, attempt + 2,
                        attempts, delay)  # fmt: skip
            time.sleep(delay)
    raise ModelLoadError(f"downloading {url} failed after {attempts} attempts: {last_problem}")


def _disk_full(dest: Path, exc: OSError) -> ModelLoadError:
    return ModelLoadError(f"the disk holding {dest.parent} is full; free some space and try again ({exc})")


def _download_once(url: str, dest: Path, sha256: str | None, progress: bool, timeout_s: float) -> str:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    log.info("downloading %s to %s", url, dest)
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        if response.headers.get_content_type() == "text/html":
            raise ModelLoadError(f"{url} sent an HTML page where {dest.name} was expected; the link is probably dead")
        length = _content_length(response)
        if length is not None and shutil.disk_usage(dest.parent).free < length:
            raise _disk_full(dest, OSError(errno.ENOSPC, f"{length} bytes needed"))
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            digest = _stream(response, fd, url, dest, length, progress)
            if sha256 and digest != sha256.lower():
                raise ModelLoadError(
                    f"{url} does not match its known SHA-256 (expected {sha256[:16]}…, got {digest[:16]}…)"
                )
            os.fsync(fd)  # the bytes are on disk before the name says the file is complete
            os.close(fd)
            fd = -1
            os.replace(tmp_name, dest)
            _fsync_directory(dest.parent)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            Path(tmp_name).unlink(missing_ok=True)
            raise
    return digest


def _stream(
    response: http.client.HTTPResponse, fd: int, url: str, dest: Path, length: int | None, progress: bool
) -> str:
    hasher = hashlib.sha256()
    received = 0
    bar = tqdm(total=length, desc=dest.name, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress)
    with bar:
        while chunk := response.read(CHUNK_BYTES):
            if received == 0 and chunk[:64].lstrip().lower().startswith(_HTML_STARTS):
                raise ModelLoadError(
                    f"{url} sent an HTML page where {dest.name} was expected; the link is probably dead"
                )
            _write_all(fd, chunk)
            hasher.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    if length is not None and received != length:
        raise _Transient(f"truncated download: got {received} of {length} bytes")
    if received == 0:
        raise ModelLoadError(f"{url} sent an empty file")
    return hasher.hexdigest()


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_directory(directory: Path) -> None:
    # the rename itself must survive a crash too
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        _write_all(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp_name, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp_name).unlink(missing_ok=True)
        raise
