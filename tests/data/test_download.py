"""Download from a loopback HTTP server and local mirrors: never the internet."""

from __future__ import annotations

import gzip
import io
import json
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from lymphosort.data import download as dl
from lymphosort.data import layout, lymphomnist as lm
from lymphosort.data.info import INFO, MIRROR_ENV
from lymphosort.errors import DownloadError
from tests.conftest import write_tiny_lymphomnist

NAMES = ("train_images", "train_labels", "test_images", "test_labels")


class Server:
    """A loopback HTTP server over a dict of path -> bytes, with switchable misbehaviour."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.honor_range = True
        self.drop_once: set[str] = set()  # paths whose first answer stops half-way
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                server.requests.append((path, self.headers.get("Range")))
                if path not in server.files:
                    self.send_error(404)
                    return
                data = server.files[path]
                start = 0
                rng = self.headers.get("Range")
                if rng and server.honor_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if path in server.drop_once:
                    server.drop_once.discard(path)
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(no_internet: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def source(tmp_path: Path) -> dict[str, bytes]:
    """The bytes of a tiny data set (30 train, 24 test), by file name."""
    raw = write_tiny_lymphomnist(tmp_path / "src")
    return {name: (raw / name).read_bytes() for name in NAMES}


def _zip(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def _assert_installed(root: Path, source: dict[str, bytes]) -> None:
    raw = root / "LymphoMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(NAMES)  # no staging leftovers
    for name in NAMES:
        assert (raw / name).read_bytes() == source[name]


def test_zip_with_files_at_depth(server: Server, source: dict[str, bytes], tmp_path: Path) -> None:
    entries = {f"release/v1/LymphoMNIST/{n}": b for n, b in source.items()}
    entries["__MACOSX/release/._train_images"] = b"junk"
    entries["README.txt"] = b"hello"
    server.files["/data.zip"] = _zip(entries)
    root = tmp_path / "root"
    out = dl.download(root, f"{server.url}/data.zip?dl=1", include_default=False, validate_official=False)
    assert out == root / "LymphoMNIST" / "raw"
    _assert_installed(root, source)
    assert len(lm.load_split(root, "train", validate_official=False)) == 30


def test_zip_of_gz_files_and_local_zip(source: dict[str, bytes], tmp_path: Path) -> None:
    archive = tmp_path / "mirror.zip"
    archive.write_bytes(_zip({f"d/{n}.gz": gzip.compress(b) for n, b in source.items()}))
    dl.download(tmp_path / "root", archive, include_default=False, validate_official=False)
    _assert_installed(tmp_path / "root", source)


def test_per_file_gz_base_url(server: Server, source: dict[str, bytes], tmp_path: Path) -> None:
    for name, data in source.items():
        server.files[f"/gz/{name}.gz"] = gzip.compress(data)
    dl.download(tmp_path / "root", f"{server.url}/gz", include_default=False, validate_official=False, progress=False)
    _assert_installed(tmp_path / "root", source)


def test_raw_files_with_provenance(server: Server, source: dict[str, bytes], tmp_path: Path) -> None:
    for name, data in source.items():
        server.files[f"/raw/{name}"] = data
    prov = {"source": "simulated", "preset": "x", "seed": 3}
    server.files["/raw/provenance.json"] = json.dumps(prov).encode()
    root = tmp_path / "root"
    # simulated provenance: the official counts are not required, without being told
    dl.download(root, f"{server.url}/raw/", include_default=False)
    _assert_installed(root, source)
    assert lm.read_provenance(root) == prov
    assert len(lm.load_split(root, "test")) == 18


def test_resume_after_dropped_connection(server: Server, source: dict[str, bytes], tmp_path: Path) -> None:
    server.files["/data.zip"] = _zip({f"x/{n}": b for n, b in source.items()})
    server.drop_once.add("/data.zip")
    dl.download(tmp_path / "root", f"{server.url}/data.zip", include_default=False, validate_official=False)
    _assert_installed(tmp_path / "root", source)
    ranges = [r for p, r in server.requests if p == "/data.zip"]
    half = len(server.files["/data.zip"]) // 2
    assert ranges == [None, f"bytes={half}-"]


def test_part_file_survives_a_failed_run_and_is_resumed(server: Server, source: dict[str, bytes], tmp_path: Path) -> None:
    server.files["/data.zip"] = _zip({f"x/{n}": b for n, b in source.items()})
    server.drop_once.add("/data.zip")
    root, url = tmp_path / "root", f"{server.url}/data.zip"
    with pytest.raises(DownloadError, match="IncompleteRead"):
        dl.download(root, url, include_default=False, validate_official=False, retries=0)
    parts = list((root / "LymphoMNIST" / "raw" / ".download").glob("*.part"))
    half = len(server.files["/data.zip"]) // 2
    assert len(parts) == 1 and parts[0].stat().st_size == half
    dl.download(root, url, include_default=False, validate_official=False, retries=0)
    _assert_installed(root, source)
    assert [r for p, r in server.requests] == [None, f"bytes={half}-"]


def test_server_ignoring_range_restarts(server: Server, source: dict[str, bytes], tmp_path: Path) -> None:
    server.files["/data.zip"] = _zip({f"x/{n}": b for n, b in source.items()})
    server.honor_range = False
    server.drop_once.add("/data.zip")
    dl.download(tmp_path / "root", f"{server.url}/data.zip", include_default=False, validate_official=False)
    _assert_installed(tmp_path / "root", source)  # restarted, not appended
    assert [r is not None for p, r in server.requests] == [False, True]


def test_fetch_resumes_a_part_file_from_an_earlier_run(server: Server, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 40
    server.files["/blob"] = payload
    dest = tmp_path / "blob"
    (tmp_path / "blob.part").write_bytes(payload[:1000])
    dl.fetch_url(f"{server.url}/blob", dest, progress=False)
    assert dest.read_bytes() == payload and not (tmp_path / "blob.part").exists()
    assert server.requests == [("/blob", "bytes=1000-")]


@pytest.mark.parametrize(
    ("member", "link", "reason"),
    [("../evil", None, "'..' path"), ("/abs/evil", None, "absolute path"), ("d/link", "../../evil", "symlink")],
)
def test_zip_slip_rejected(source: dict[str, bytes], tmp_path: Path, member: str, link: str | None, reason: str) -> None:
    entries = {f"d/{n}": b for n, b in source.items()}
    links = {}
    if link is None:
        entries[member] = b"pwned"
    else:
        links[member] = link
    archive = tmp_path / "bad.zip"
    archive.write_bytes(_zip(entries, links))
    root = tmp_path / "a" / "root"
    with pytest.raises(DownloadError, match=f"unsafe archive member .*{reason}"):
        dl.download(root, archive, include_default=False, validate_official=False)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "a" / "evil").exists()
    assert list((root / "LymphoMNIST" / "raw").iterdir()) == []


def test_all_mirrors_fail_with_one_clear_message(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "nope"))
    server.files["/page"] = b"<html>not a zip</html>"
    root = tmp_path / "root"
    with pytest.raises(DownloadError) as info:
        dl.download(root, [f"{server.url}/missing.zip", "http://127.0.0.1:1/x.zip", f"{server.url}/page"],
                    progress=False)
    msg = str(info.value)
    assert f"{server.url}/missing.zip (neither a zip nor a folder with train_images (HTTP 404))" in msg
    assert "http://127.0.0.1:1/x.zip (unreachable:" in msg
    assert f"{tmp_path / 'nope'} (no such file or directory)" in msg
    assert "www.dropbox.com" in msg and "offline test: no DNS" in msg  # the default mirror, offline
    assert "--mirror URL_OR_PATH" in msg and MIRROR_ENV in msg
    assert f"{server.url}/page (neither a zip" in msg
    assert str(root / "LymphoMNIST" / "raw") in msg and "\n" not in msg
    assert list((root / "LymphoMNIST" / "raw").iterdir()) == []  # no leftovers


def test_official_counts_are_checked_for_real_data(source: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "src"  # a directory mirror with no provenance: claims to be the real set
    with pytest.raises(DownloadError, match="30 train images, but the official LymphoMNIST train file has 64000"):
        dl.download(tmp_path / "root", mirror, include_default=False)
    monkeypatch.setattr(layout, "INFO", {**INFO, "n_train": 30, "n_test": 24})
    dl.download(tmp_path / "root", mirror, include_default=False)
    _assert_installed(tmp_path / "root", source)
    assert lm.read_provenance(tmp_path / "root") == {"source": "real"}


def test_bad_mirror_then_good_one_and_env_order(source: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad"
    write_tiny_lymphomnist(bad, n_train=30)
    (bad / "LymphoMNIST" / "raw" / "train_labels").write_bytes(
        (tmp_path / "src" / "LymphoMNIST" / "raw" / "test_labels").read_bytes())  # 24 labels for 30 images
    monkeypatch.setenv(MIRROR_ENV, f" {tmp_path / 'src'} ;")
    assert dl.resolve_mirrors(str(bad)) == [str(bad), str(tmp_path / "src"), *INFO["mirrors"]]
    root = tmp_path / "root"
    dl.download(root, str(bad), include_default=False, validate_official=False)
    _assert_installed(root, source)


def test_present_files_are_kept_unless_forced(tiny_root: Path, tmp_path: Path) -> None:
    before = (tiny_root / "LymphoMNIST" / "raw" / "train_images").read_bytes()
    dl.download(tiny_root, tmp_path / "nope", include_default=False)  # nothing to do
    with pytest.raises(DownloadError):
        dl.download(tiny_root, tmp_path / "nope", include_default=False, force=True)
    assert (tiny_root / "LymphoMNIST" / "raw" / "train_images").read_bytes() == before


def test_simulated_directory_mirror_carries_provenance(tiny_root: Path, tmp_path: Path) -> None:
    dl.download(tmp_path / "copy", tiny_root, include_default=False)
    assert lm.read_provenance(tmp_path / "copy")["source"] == "simulated"
    assert lm.load_split(tmp_path / "copy", "val").split_id == lm.load_split(tiny_root, "val").split_id
