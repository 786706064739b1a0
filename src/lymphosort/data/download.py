"""Download LymphoMNIST from mirrors: resumable, atomic, archive-safe, validated.

A mirror is a URL or a local path, tried in this order: the ``mirrors`` argument (CLI
``--mirror``), ``$LYMPHOSORT_MIRROR`` (';'-separated), then ``INFO["mirrors"]``. It may be a
zip (the four files at any depth, each optionally ``.gz``), or a base URL / directory holding
``train_images`` ... (or ``train_images.gz`` ...). Files are extracted into a staging
folder, checked with :func:`read_idx`, and only then moved into ``ROOT/LymphoMNIST/raw``.
Only the stdlib's urllib is used, so there is no extra dependency.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, Any, Iterable, Sequence

from lymphosort.data.info import INFO, MIRROR_ENV
from lymphosort.data.layout import PROVENANCE_FILE, dataset_folder, file_names, missing_files, raw_folder, read_pair
from lymphosort.errors import DownloadError, IDXError

__all__ = ["download", "resolve_mirrors"]

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: Cap on one extracted file: the real images file is ~262 MB; more means a bad archive.
MAX_FILE_BYTES = 4 << 30
_TRANSIENT = (http.client.IncompleteRead, ConnectionError, TimeoutError)
_USER_AGENT = "lymphosort (urllib)"


class _NotAnArchive(Exception):
    """The URL answered, but not with a zip: try it as a base URL instead."""


def resolve_mirrors(
    mirrors: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    *,
    include_default: bool = True,
    env: str | None = None,
) -> list[str]:
    """Mirrors in the order tried: explicit ones, then ``$LYMPHOSORT_MIRROR``, then INFO's."""
    if mirrors is None:
        given: list[str] = []
    elif isinstance(mirrors, (str, os.PathLike)):
        given = [os.fspath(mirrors)]
    else:
        given = [os.fspath(m) for m in mirrors]
    env_value = os.environ.get(MIRROR_ENV, "") if env is None else env
    out: list[str] = []
    for item in [*given, env_value]:
        out += [part.strip() for part in item.split(";") if part.strip()]
    if include_default:
        out += list(INFO["mirrors"])  # type: ignore[call-overload]
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------- HTTP


def fetch_url(url: str, dest: Path, *, timeout: float = 60.0, retries: int = 3, progress: bool = True) -> Path:
    """Stream ``url`` to ``dest`` via ``dest.part``, resuming with HTTP Range, then rename.

    A ``.part`` left by an earlier, interrupted run is resumed; a server that ignores Range
    (answers 200) restarts it from zero; a connection dropped mid-body is retried from where
    it stopped, up to ``retries`` times.
    """
    from tqdm import tqdm

    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": _USER_AGENT}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # our .part is stale or complete: start over
                part.unlink()
                continue
            raise
        with resp:
            status = resp.status
            length = resp.headers.get("Content-Length")
            if status == 206 and have:
                m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != have:
                    part.unlink()  # an answer for some other range: unusable
                    continue
                mode, start = "ab", have
            else:
                mode, start = "wb", 0  # a fresh download, or the server ignored Range
            total = start + int(length) if length is not None else None
            got = start
            try:
                with open(part, mode) as fh, tqdm(
                    total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=dest.name[:30], disable=not progress, leave=False,
                ) as bar:
                    while chunk := resp.read(CHUNK):
                        fh.write(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
                if total is not None and got < total:
                    raise http.client.IncompleteRead(b"", total - got)
            except _TRANSIENT as exc:
                if attempt == retries:
                    raise
                log.info("%s: connection dropped at %d bytes (%s); resuming", url, got, type(exc).__name__)
                continue
        os.replace(part, dest)
        return dest
    raise DownloadError(f"{url}: gave up after {retries + 1} attempts")


# --------------------------------------------------------------------------- extraction


def _copy_capped(src: IO[bytes], dest: Path, gunzip: bool) -> None:
    """Stream ``src`` (gunzipped if asked) into ``dest`` atomically, refusing huge output."""
    stream: IO[bytes] = gzip.GzipFile(fileobj=src, mode="rb") if gunzip else src  # type: ignore[assignment]
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        written = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                written += len(chunk)
                if written > MAX_FILE_BYTES:
                    raise DownloadError(f"{dest.name} is larger than {MAX_FILE_BYTES >> 30} GiB; refusing it")
                out.write(chunk)
        os.replace(tmp, dest)
    except (OSError, EOFError, zlib.error) as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, DownloadError):
            raise
        raise DownloadError(f"{dest.name}: cannot decompress ({exc})") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _choose(members: Iterable[tuple[tuple[str, ...], Any]]) -> dict[str, tuple[Any, bool]]:
    """Pick each needed file among (path parts, handle): shallowest first, raw before .gz."""
    wanted = {name: key for key, name in file_names().items()}
    best: dict[str, tuple[tuple[int, int], Any, bool]] = {}
    for parts, handle in members:
        base = parts[-1]
        gz = base.endswith(".gz")
        key = wanted.get(base[:-3] if gz else base)
        if key is None:
            continue
        rank = (len(parts), int(gz))
        if key not in best or rank < best[key][0]:
            best[key] = (rank, handle, gz)
    missing = [name for key, name in file_names().items() if key not in best]
    if missing:
        raise DownloadError(f"no {', '.join(missing)} in it")
    return {key: (handle, gz) for key, (_, handle, gz) in best.items()}


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "a '..' path"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symlink"
    return None


def _provenance_near(candidates: Iterable[Any], read: Any) -> dict[str, Any] | None:
    for cand in candidates:
        try:
            prov = json.loads(read(cand))
        except (KeyError, OSError, ValueError):
            continue
        if isinstance(prov, dict) and isinstance(prov.get("source"), str):
            return prov
    return None


def _from_zip(path: Path, out: Path) -> dict[str, Any] | None:
    """Extract the four files of a zip into ``out``; returns its provenance.json, if any."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"not a valid zip ({exc})") from exc
    with zf:
        infos = zf.infolist()
        # Reject the whole archive on any unsafe member, even one we would not extract:
        # such an archive is not what the authors published.
        for info in infos:
            reason = _unsafe_reason(info)
            if reason is not None:
                raise DownloadError(f"unsafe archive member {info.filename!r} ({reason})")
        files = [i for i in infos if not i.is_dir()]
        chosen = _choose((tuple(PurePosixPath(i.filename).parts), i) for i in files)
        for key, (info, gz) in chosen.items():
            with zf.open(info) as src:
                _copy_capped(src, out / file_names()[key], gz)
        anchor = PurePosixPath(chosen["train_images"][0].filename).parent
        names = {i.filename: i for i in files}
        near = [str(anchor / "provenance.json"), str(anchor.parent / "provenance.json")]
        return _provenance_near([names[n] for n in near if n in names], zf.read)


def _from_dir(path: Path, out: Path) -> dict[str, Any] | None:
    members = []
    for name in file_names().values():
        for cand in [*path.rglob(name), *path.rglob(f"{name}.gz")]:
            if cand.is_file():
                members.append((cand.relative_to(path).parts, cand))
    chosen = _choose(members)
    for key, (src_path, gz) in chosen.items():
        with open(src_path, "rb") as src:
            _copy_capped(src, out / file_names()[key], gz)
    anchor = chosen["train_images"][0].parent
    return _provenance_near([anchor / "provenance.json", anchor.parent / "provenance.json"],
                            lambda p: Path(p).read_bytes())


def _from_url(url: str, out: Path, work: Path, **fetch: Any) -> dict[str, Any] | None:
    tag = hashlib.sha1(url.encode()).hexdigest()[:12]
    if not urllib.parse.urlparse(url).path.endswith("/"):
        try:
            archive = fetch_url(url, work / f"{tag}.archive", **fetch)
            if zipfile.is_zipfile(archive):
                return _from_zip(archive, out)
            archive.unlink()
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
    # A base URL holding the files themselves.
    base = url if url.endswith("/") else url + "/"
    for name in file_names().values():
        for candidate in (name, f"{name}.gz"):
            try:
                got = fetch_url(base + candidate, work / f"{tag}.{candidate}", **fetch)
                break
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
        else:
            raise DownloadError(f"neither a zip nor a folder with {name} (HTTP 404)")
        with open(got, "rb") as src:
            gz = src.read(2) == b"\x1f\x8b"  # per-file gzip, whatever the name says
            src.seek(0)
            _copy_capped(src, out / name, gz)
        got.unlink()
    try:
        prov_file = fetch_url(base + "provenance.json", work / f"{tag}.provenance.json", progress=False,
                              timeout=fetch.get("timeout", 60.0))
    except urllib.error.HTTPError:
        return None
    prov = _provenance_near([prov_file], lambda p: Path(p).read_bytes())
    prov_file.unlink()
    return prov


def _local_path(mirror: str) -> Path | None:
    parsed = urllib.parse.urlparse(mirror)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    return Path(mirror).expanduser()  # no scheme (or a Windows drive letter): a local path


def _reason(exc: BaseException, strip: Path) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        text = f"unreachable: {exc.reason}"
    elif isinstance(exc, (DownloadError, IDXError)):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = text.replace(f"{strip}{os.sep}", "")
    return text if len(text) <= 200 else text[:197] + "..."


def _short(mirror: str) -> str:
    return mirror if len(mirror) <= 80 else mirror[:77] + "..."


# --------------------------------------------------------------------------- entry point


def download(
    root: str | os.PathLike[str],
    mirrors: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    *,
    include_default: bool = True,
    validate_official: bool | None = None,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
    retries: int = 3,
) -> Path:
    """Make ``ROOT/LymphoMNIST/raw`` hold the four validated IDX files; returns that folder.

    Mirrors are tried in :func:`resolve_mirrors` order until one gives four files that pass
    :func:`read_idx` with matching counts and 64x64 images; ``validate_official`` (default:
    unless the mirror ships a provenance.json saying it is simulated) also requires INFO's
    official counts. Raises :class:`DownloadError` naming each mirror's reason if all fail.
    """
    raw = raw_folder(root)
    if not force and not missing_files(root):
        log.info("LymphoMNIST already in %s", raw)
        return raw
    raw.mkdir(parents=True, exist_ok=True)
    work = raw / ".download"  # .part files stay here between runs, so a retry resumes
    failures: list[str] = []
    candidates = resolve_mirrors(mirrors, include_default=include_default)
    for mirror in candidates:
        out = work / "extract"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        try:
            local = _local_path(mirror)
            if local is None:
                prov = _from_url(mirror, out, work, timeout=timeout, retries=retries, progress=progress)
            elif local.is_dir():
                prov = _from_dir(local, out)
            elif local.is_file():
                prov = _from_zip(local, out)
            else:
                raise DownloadError("no such file or directory")
            official = (prov is None or prov.get("source") == "real") if validate_official is None else validate_official
            for which in ("train", "test"):
                read_pair(out / file_names()[f"{which}_images"], out / file_names()[f"{which}_labels"], which, official)
        except (DownloadError, IDXError, OSError, http.client.HTTPException, zipfile.BadZipFile, ValueError) as exc:
            failures.append(f"{_short(mirror)} ({_reason(exc, out)})")
            log.info("mirror %s failed: %s", mirror, failures[-1])
            continue
        for name in file_names().values():
            os.replace(out / name, raw / name)
            (raw / f"{name}.gz").unlink(missing_ok=True)  # a stale sibling would confuse readers
        _write_provenance(dataset_folder(root) / PROVENANCE_FILE, prov)
        shutil.rmtree(work, ignore_errors=True)
        log.info("LymphoMNIST from %s is in %s", mirror, raw)
        return raw
    shutil.rmtree(work / "extract", ignore_errors=True)
    for leftover in work.glob("*"):
        if not leftover.name.endswith(".part"):
            leftover.unlink(missing_ok=True)  # complete but unusable downloads
    try:
        work.rmdir()  # kept only while it holds .part files to resume
    except OSError:
        pass
    tried = "; ".join(failures) if failures else "no mirror given"
    names = ", ".join(file_names().values())
    raise DownloadError(
        f"could not download LymphoMNIST, every mirror failed: {tried}; pass a working mirror with "
        f"--mirror URL_OR_PATH or {MIRROR_ENV}=URL_OR_PATH (';' separates several), or place {names} "
        f"(IDX, optionally .gz) in {raw} by hand"
    )


def _write_provenance(path: Path, prov: dict[str, Any] | None) -> None:
    """Carry the mirror's provenance over; real data has none, so drop a stale one."""
    if prov is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(prov, indent=2))
    os.replace(tmp, path)
