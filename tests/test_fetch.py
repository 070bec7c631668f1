"""Download and extraction: the guards a real upstream archive could trip."""

import hashlib
import http.server
import stat
import threading
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from cxr.core.outputs import staged_directory
from cxr.data.sources.fetch import FetchError, Limits, download, safe_extract, write_manifest

LIMITS = Limits(max_archive_bytes=10**9, max_member_bytes=10**6, max_total_bytes=10**7)


def keep_all(name: PurePosixPath) -> PurePosixPath:
    return name


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_extracts_selected_members_and_writes_manifest(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"top/keep/a.txt": b"alpha", "top/skip/b.txt": b"beta"})
    target = tmp_path / "out"
    target.mkdir()
    select = lambda name: name if "keep" in name.parts else None  # noqa: E731
    written = safe_extract(archive, target, select=select, limits=LIMITS)
    assert written == [PurePosixPath("top/keep/a.txt")]
    assert not (target / "top/skip").exists()
    manifest_sha = write_manifest(target)
    line = (target / "MANIFEST.sha256").read_text()
    assert line == f"{hashlib.sha256(b'alpha').hexdigest()}  top/keep/a.txt\n"
    assert manifest_sha == hashlib.sha256(line.encode()).hexdigest()


@pytest.mark.parametrize("evil", ["../escape.txt", "top/../../escape.txt", "/etc/evil.txt"])
def test_zip_slip_is_refused_and_nothing_is_left(tmp_path, evil):
    archive = make_zip(tmp_path / "evil.zip", {"top/fine.txt": b"ok", evil: b"pwned"})
    final = tmp_path / "data" / "raw" / "src"
    with pytest.raises(FetchError, match="unsafe member path") as error:
        with staged_directory(final) as staging:
            safe_extract(archive, staging, select=keep_all, limits=LIMITS)
    assert evil in str(error.value)
    assert not final.exists()
    assert list(final.parent.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()


def test_symlink_member_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        info = zipfile.ZipInfo("top/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        handle.writestr(info, "/etc/passwd")
    with pytest.raises(FetchError, match="'top/link' is a symbolic link"):
        safe_extract(archive, tmp_path, select=keep_all, limits=LIMITS)


def test_truncated_archive_is_an_error(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"top/a.bin": bytes(range(256)) * 400})
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(archive.read_bytes()[:-300])
    with pytest.raises(FetchError, match="truncated.zip: not a readable zip archive"):
        safe_extract(truncated, tmp_path / "out", select=keep_all, limits=LIMITS)


def test_corrupt_member_data_is_an_error(tmp_path):
    payload = b"chest x-ray " * 1000
    archive = make_zip(tmp_path / "a.zip", {"top/a.bin": payload})
    data = bytearray(archive.read_bytes())
    offset = data.index(b"top/a.bin") + len("top/a.bin") + 20
    data[offset : offset + 8] = b"\xff" * 8
    archive.write_bytes(bytes(data))
    with pytest.raises(FetchError, match="member 'top/a.bin' is corrupt or truncated"):
        safe_extract(archive, tmp_path / "out", select=keep_all, limits=LIMITS)


def test_size_limits(tmp_path):
    archive = make_zip(tmp_path / "big.zip", {"top/big.bin": b"\0" * 2_000_000})
    with pytest.raises(FetchError, match="max_member_bytes"):
        safe_extract(archive, tmp_path / "out", select=keep_all, limits=LIMITS)
    many = make_zip(tmp_path / "many.zip", {f"top/{i}.bin": b"\0" * 900_000 for i in range(12)})
    with pytest.raises(FetchError, match="max_total_bytes"):
        safe_extract(many, tmp_path / "out2", select=keep_all, limits=LIMITS)


def test_failed_stage_keeps_earlier_result(tmp_path):
    final = tmp_path / "raw" / "src"
    final.mkdir(parents=True)
    (final / "old.txt").write_text("earlier good data")
    with pytest.raises(RuntimeError):
        with staged_directory(final) as staging:
            (staging / "half.txt").write_text("half")
            raise RuntimeError("extraction failed")
    assert [path.name for path in final.iterdir()] == ["old.txt"]
    assert sorted(path.name for path in final.parent.iterdir()) == ["src"]


def test_file_url_and_checksum_mismatch(tmp_path):
    source = make_zip(tmp_path / "mirror.zip", {"top/a.txt": b"alpha"})
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    kwargs = dict(retries=0, timeout_s=5, max_bytes=10**6)
    assert download(source.as_uri(), tmp_path / "dl" / "a.zip", sha256=good, **kwargs).is_file()
    with pytest.raises(FetchError, match="checksum mismatch: expected sha256 0000"):
        download(source.as_uri(), tmp_path / "dl" / "b.zip", sha256="0" * 64, **kwargs)
    assert sorted(path.name for path in (tmp_path / "dl").iterdir()) == ["a.zip"]
    with pytest.raises(FetchError, match="no such file"):
        download((tmp_path / "absent.zip").as_uri(), tmp_path / "dl" / "c.zip", sha256=None, **kwargs)


class FlakyServer(http.server.ThreadingHTTPServer):
    """Serves one payload; the first ``failures`` requests get a 503 or a cut-off body."""

    def __init__(self, payload: bytes, failures: int, mode: str):
        self.payload, self.failures, self.mode, self.requests = payload, failures, mode, 0
        super().__init__(("127.0.0.1", 0), FlakyHandler)


class FlakyHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        server = self.server
        server.requests += 1
        if server.requests <= server.failures and server.mode == "503":
            self.send_error(503)
            return
        if self.path != "/archive.zip":
            self.send_error(404)
            return
        body = server.payload
        if server.requests <= server.failures and server.mode == "cut":
            body = body[: len(body) // 2]
        self.send_response(200)
        self.send_header("Content-Length", str(len(server.payload)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(payload: bytes, failures: int = 0, mode: str = "503") -> tuple[str, FlakyServer]:
        server = FlakyServer(payload, failures, mode)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}", server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("mode", ["503", "cut"])
def test_http_download_retries_then_succeeds(tmp_path, serve, mode):
    payload = b"zip bytes " * 5000
    base, server = serve(payload, failures=2, mode=mode)
    path = download(
        f"{base}/archive.zip",
        tmp_path / "a.zip",
        sha256=hashlib.sha256(payload).hexdigest(),
        retries=3,
        timeout_s=5,
        max_bytes=10**6,
    )
    assert path.read_bytes() == payload
    assert server.requests == 3


def test_http_download_gives_up_and_leaves_nothing(tmp_path, serve):
    base, server = serve(b"x" * 1000, failures=10, mode="cut")
    with pytest.raises(FetchError, match="failed after 3 attempts: .*(truncated|IncompleteRead)"):
        download(f"{base}/archive.zip", tmp_path / "a.zip", sha256=None, retries=2, timeout_s=5, max_bytes=10**6)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FetchError, match="HTTP 404"):
        download(f"{base}/missing.zip", tmp_path / "b.zip", sha256=None, retries=2, timeout_s=5, max_bytes=10**6)
