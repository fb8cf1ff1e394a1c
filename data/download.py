"""Fetch N-BaIoT into the per-device layout, or import a local copy.

Layout produced under DEST (what data/loader.py reads):
    DEST/<Device>/benign_traffic.csv
    DEST/<Device>/gafgyt_attacks/{combo,junk,scan,tcp,udp}.csv
    DEST/<Device>/mirai_attacks/{ack,scan,syn,udp,udpplain}.csv

Sources (`data_args.download_source`):
    uci              UCI's N-BaIoT files (benign CSV + gafgyt_attacks.rar + mirai_attacks.rar per device)
    uci:<base-url>   a mirror with UCI's file names under <base-url>/<Device>/
    zip:<base-url>   one zip per device, <base-url>/<Device>.zip, holding the per-device layout
A `SHA256SUMS` file at the base URL (lines "<sha256>  <Device>/<file>"), when present, is checked.

Downloads resume (HTTP Range) from DEST/.partial/, show progress, check sizes (and checksums),
and a device directory appears only when all of its files were fetched, extracted and validated
(built in DEST/.staging/ and renamed into place).

Command line:
    python -m data.download --dest DIR [--devices A B ...] [--source uci]
    python -m data.download --import PATH --dest DIR     (UCI with .rar, per-device, zips or Kaggle flat files)
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Iterable

from data import nbaiot
from fediot.console import Progress, say
from fediot.errors import DataError

UCI_BASE_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/00442"
CHECKSUM_FILE = "SHA256SUMS"
CHUNK_BYTES = 1 << 20
HTTP_TIMEOUT_S = 60
STAGING = ".staging"
PARTIAL = ".partial"


# ---------------------------------------------------------------- validation of a device directory
def _header_ok(path: Path) -> bool:
    with open(path, "r", errors="replace") as fh:
        first = fh.readline().strip().split(",")
    return tuple(c.strip() for c in first) == nbaiot.COLUMNS


def validate_device_dir(ddir: Path, device: str) -> list[str]:
    """Check a staged device directory; returns the attack files it lacks. Raises on bad files."""
    benign = ddir / nbaiot.BENIGN_FILE
    if not benign.is_file():
        raise DataError(f"{device}: {nbaiot.BENIGN_FILE} missing after extraction (looked in {ddir})")
    missing = []
    for path in [benign, *(ddir / nbaiot.attack_relpath(a) for a in nbaiot.attack_names(device))]:
        if not path.is_file():
            missing.append(path.relative_to(ddir).as_posix())
            continue
        if path.stat().st_size == 0 or not _header_ok(path):
            raise DataError(f"{path}: not an N-BaIoT CSV (empty, or header is not the {nbaiot.N_FEATURES} N-BaIoT columns)")
    return missing


def _install(staged: Path, dest: Path, device: str) -> Path:
    """Validate a staged device directory and move it into place atomically."""
    missing = validate_device_dir(staged, device)
    if missing:
        say(f"warning: {device}: {len(missing)} attack file(s) absent in the source: {', '.join(missing)}")
    target = dest / device
    old = None
    if target.exists():
        old = dest / STAGING / f"{device}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(staged, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _new_stage(dest: Path, device: str) -> Path:
    root = dest / STAGING
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{device}.", dir=root))


# ---------------------------------------------------------------- archives
def extract_rar(archive: Path, out_dir: Path) -> None:
    """Extract the CSV files of a RAR archive (flattened) into out_dir."""
    import rarfile

    try:
        with rarfile.RarFile(archive) as rf:
            for info in rf.infolist():
                if info.is_dir() or not info.filename.lower().endswith(".csv"):
                    continue
                out_dir.mkdir(parents=True, exist_ok=True)
                with rf.open(info) as src, open(out_dir / Path(info.filename).name, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK_BYTES)
    except rarfile.RarCannotExec:
        raise DataError(
            f"{archive}: extracting compressed RAR archives needs an unrar tool (unrar, unar, 7z or bsdtar) "
            f"on PATH, e.g. 'apt install unar' or 'apt install libarchive-tools'; or use a zip/Kaggle copy"
        ) from None
    except (rarfile.Error, OSError) as exc:
        raise DataError(f"{archive}: cannot read RAR archive ({exc})") from None


def extract_zip(archive: Path, out_dir: Path) -> None:
    """Extract a zip archive into out_dir, refusing paths that escape it."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = (out_dir / info.filename).resolve()
                if not str(target).startswith(str(out_dir.resolve())):
                    raise DataError(f"{archive}: unsafe path {info.filename!r} in zip")
            zf.extractall(out_dir)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{archive}: not a valid zip archive ({exc})") from None


def _find_device_root(tree: Path, device: str) -> Path:
    """Inside an extracted tree, the folder holding benign_traffic.csv (device folder or its parent)."""
    hits = sorted(tree.rglob(nbaiot.BENIGN_FILE))
    if not hits:
        raise DataError(f"{device}: no {nbaiot.BENIGN_FILE} inside the archive")
    return hits[0].parent


# ---------------------------------------------------------------- HTTP
def _open(url: str, headers: dict[str, str] | None = None):
    req = urllib.request.Request(url, headers={"User-Agent": "FedIoT-downloader", **(headers or {})})
    return urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S)


def fetch(url: str, dest_file: Path, label: str) -> Path:
    """Download url to dest_file, resuming from dest_file + '.part'; checks the announced size."""
    part = dest_file.with_name(dest_file.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        resp = _open(url, headers)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # already complete
            os.replace(part, dest_file)
            return dest_file
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"{url}: cannot connect ({getattr(exc, 'reason', exc)})") from None
    with resp:
        status = resp.status
        length = resp.headers.get("Content-Length")
        if status == 206:
            mode, start = "ab", have
        else:
            mode, start = "wb", 0
        total = start + int(length) if length is not None else None
        bar = Progress(f"download {label}", total, unit="B")
        bar.update(start)
        try:
            with open(part, mode) as fh:
                while True:
                    chunk = resp.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    fh.write(chunk)
                    bar.update(len(chunk))
        except (OSError, urllib.error.URLError) as exc:
            raise DataError(f"{url}: connection lost after {part.stat().st_size} bytes ({exc}); "
                            f"run again to resume") from None
        bar.close()
    got = part.stat().st_size
    if total is not None and got != total:
        raise DataError(f"{url}: received {got} bytes, expected {total}; run again to resume")
    os.replace(part, dest_file)
    return dest_file


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            h.update(chunk)
    return h.hexdigest()


def _checksums(base_url: str) -> dict[str, str]:
    """Optional SHA256SUMS at the base URL ({} when the source publishes none)."""
    try:
        with _open(f"{base_url}/{CHECKSUM_FILE}") as resp:
            text = resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return {}
    sums = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _verify(path: Path, rel: str, sums: dict[str, str]) -> None:
    if rel in sums and _sha256(path) != sums[rel]:
        path.unlink()
        raise DataError(f"{rel}: SHA-256 mismatch with {CHECKSUM_FILE}; the corrupt file was removed, run again")


def parse_source(source: str) -> tuple[str, str]:
    """'uci' | 'uci:<url>' | 'zip:<url>' -> (format, base_url)."""
    if source == "uci":
        return "uci", UCI_BASE_URL
    fmt, sep, url = source.partition(":")
    if sep and fmt in ("uci", "zip") and url.startswith(("http://", "https://", "file://")):
        return fmt, url.rstrip("/")
    raise DataError(f"data_args.download_source = {source!r}; expected 'uci', 'uci:<base-url>' or 'zip:<base-url>'")


def download_device(dest: Path, device: str, source: str) -> Path:
    """Download, extract, validate and install one device directory."""
    fmt, base = parse_source(source)
    sums = _checksums(base)
    partial = dest / PARTIAL / device
    stage = _new_stage(dest, device)
    try:
        if fmt == "zip":
            rel = f"{device}.zip"
            archive = fetch(f"{base}/{rel}", partial / rel, rel)
            _verify(archive, rel, sums)
            tree = stage / "unzipped"
            extract_zip(archive, tree)
            os.replace(_find_device_root(tree, device), stage / device)
        else:
            out = stage / device
            out.mkdir()
            rel = f"{device}/{nbaiot.BENIGN_FILE}"
            _verify(fetch(f"{base}/{rel}", partial / nbaiot.BENIGN_FILE, rel), rel, sums)
            shutil.copyfile(partial / nbaiot.BENIGN_FILE, out / nbaiot.BENIGN_FILE)
            families = ["gafgyt"] + ([] if device in nbaiot.DEVICES_WITHOUT_MIRAI else ["mirai"])
            for fam in families:
                rel = f"{device}/{fam}_attacks.rar"
                archive = fetch(f"{base}/{rel}", partial / f"{fam}_attacks.rar", rel)
                _verify(archive, rel, sums)
                extract_rar(archive, out / f"{fam}_attacks")
        target = _install(stage / device, dest, device)
        shutil.rmtree(partial, ignore_errors=True)  # only once the device is in place
        return target
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def download_devices(dest: str | Path, devices: Iterable[str], source: str = "uci") -> None:
    """Download each device that is not yet present under dest."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    todo = [d for d in devices if not (dest / d / nbaiot.BENIGN_FILE).is_file()]
    for i, device in enumerate(todo, 1):
        nbaiot.check_device(device)
        say(f"N-BaIoT: fetching {device} ({i}/{len(todo)}) from {parse_source(source)[1]}")
        download_device(dest, device, source)


# ---------------------------------------------------------------- import of local copies
def detect_layout(src: Path) -> str:
    """'per-device' | 'uci' | 'zips' | 'kaggle' for a local copy of N-BaIoT."""
    if any((src / d / "gafgyt_attacks").is_dir() for d in nbaiot.DEVICES):
        return "per-device"
    if any((src / d / "gafgyt_attacks.rar").is_file() for d in nbaiot.DEVICES):
        return "uci"
    if any((src / f"{d}.zip").is_file() for d in nbaiot.DEVICES):
        return "zips"
    if any(src.glob("[1-9].benign.csv")):
        return "kaggle"
    if any((src / d / nbaiot.BENIGN_FILE).is_file() for d in nbaiot.DEVICES):
        return "per-device"
    raise DataError(
        f"{src}: no N-BaIoT copy recognised; expected one of: <Device>/gafgyt_attacks/*.csv (per-device), "
        f"<Device>/gafgyt_attacks.rar (UCI), <Device>.zip, or Kaggle files like 1.benign.csv, 1.gafgyt.combo.csv"
    )


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def import_device(src: Path, dest: Path, device: str, layout: str) -> Path | None:
    """Stage one device from a local copy and install it; None when the copy lacks the device."""
    stage = _new_stage(dest, device)
    out = stage / device
    try:
        if layout in ("per-device", "uci"):
            ddir = src / device
            if not (ddir / nbaiot.BENIGN_FILE).is_file():
                return None
            _copy(ddir / nbaiot.BENIGN_FILE, out / nbaiot.BENIGN_FILE)
            for fam in nbaiot.ATTACK_TYPES:
                if (ddir / f"{fam}_attacks").is_dir():
                    for csv in sorted((ddir / f"{fam}_attacks").glob("*.csv")):
                        _copy(csv, out / f"{fam}_attacks" / csv.name)
                elif (ddir / f"{fam}_attacks.rar").is_file():
                    extract_rar(ddir / f"{fam}_attacks.rar", out / f"{fam}_attacks")
        elif layout == "zips":
            archive = src / f"{device}.zip"
            if not archive.is_file():
                return None
            extract_zip(archive, stage / "unzipped")
            os.replace(_find_device_root(stage / "unzipped", device), out)
        elif layout == "kaggle":
            n = nbaiot.device_index(device)
            if not (src / f"{n}.{nbaiot.BENIGN_FILE.replace('_traffic', '')}").is_file():
                return None
            _copy(src / f"{n}.benign.csv", out / nbaiot.BENIGN_FILE)
            for attack in nbaiot.attack_names(device):
                fam, _, kind = attack.partition("_")
                f = src / f"{n}.{fam}.{kind}.csv"
                if f.is_file():
                    _copy(f, out / nbaiot.attack_relpath(attack))
        else:
            raise DataError(f"unknown layout {layout!r}")
        return _install(out, dest, device)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def import_copy(src: str | Path, dest: str | Path, devices: Iterable[str] | None = None) -> list[str]:
    """Import a local N-BaIoT copy in any supported layout; returns the devices imported."""
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise DataError(f"{src}: not a directory")
    layout = detect_layout(src)
    say(f"importing N-BaIoT from {src} ({layout} layout) into {dest}")
    dest.mkdir(parents=True, exist_ok=True)
    done = []
    for device in devices or nbaiot.DEVICES:
        if import_device(src, dest, device, layout) is not None:
            say(f"  {device}: imported")
            done.append(device)
    if not done:
        raise DataError(f"{src}: recognised as {layout} layout but no device could be imported")
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dest", default="data/cache/nbaiot", help="target directory (default %(default)s)")
    p.add_argument("--devices", nargs="*", default=None, help="device names (default: all 9)")
    p.add_argument("--source", default="uci", help="uci | uci:<base-url> | zip:<base-url> (default %(default)s)")
    p.add_argument("--import", dest="import_path", default=None, help="import a local copy instead of downloading")
    args = p.parse_args(argv)
    try:
        for d in args.devices or []:
            try:
                nbaiot.check_device(d)
            except ValueError as exc:
                raise DataError(str(exc)) from None
        if args.import_path:
            import_copy(args.import_path, args.dest, args.devices)
        else:
            download_devices(args.dest, args.devices or list(nbaiot.DEVICES), args.source)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    say(str(Path(args.dest).resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
