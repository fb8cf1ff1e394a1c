"""Test fixtures: stored RAR archives, an HTTP server with Range support, small data trees."""
from __future__ import annotations

import ast
import http.server
import importlib.util
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from data import nbaiot, synthetic

REPO = Path(__file__).resolve().parents[1]
# A copy of ../shared/data/nbaiot-real-sample (real N-BaIoT rows, CC BY 4.0; see its README.md),
# kept in the repository so the tests run the same on a fresh clone.
REAL_SAMPLE = REPO / "tests" / "data" / "nbaiot-real-sample"


def load_tool(name: str):
    """A script of tools/ (not a package) as a module, for tests of its functions."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rar_block(head_type: int, flags: int, body: bytes) -> bytes:
    size = 7 + len(body)
    without_crc = struct.pack("<BHH", head_type, flags, size) + body
    crc = zlib.crc32(without_crc) & 0xFFFF
    return struct.pack("<H", crc) + without_crc


def write_stored_rar(path: Path, files: dict[str, bytes]) -> Path:
    """Write a RAR 4.x archive whose members are stored (method 0x30, no compression).

    Real N-BaIoT archives are compressed and need an unrar tool; stored members are read by the
    rarfile package itself, which lets tests exercise the RAR path without any tool installed.
    """
    out = bytearray(b"Rar!\x1a\x07\x00")
    out += _rar_block(0x73, 0x0000, b"\x00" * 6)
    for name, data in files.items():
        name_b = name.encode()
        body = struct.pack("<IIBIIBBHI", len(data), len(data), 3, zlib.crc32(data) & 0xFFFFFFFF,
                           0x5A210000, 20, 0x30, len(name_b), 0x81A4) + name_b
        out += _rar_block(0x74, 0x8000, body) + data
    out += _rar_block(0x7B, 0x4000, b"")
    path.write_bytes(bytes(out))
    return path


def device_rows(device: str, n: int, seed: int = 0, attack: str | None = None) -> np.ndarray:
    rng = np.random.default_rng([seed, nbaiot.device_index(device), 7])
    profile = synthetic._ATTACK_PROFILES[attack] if attack else synthetic.device_profile(device, seed)
    return synthetic.generate_rows(profile, n, rng)


def csv_bytes(rows: np.ndarray) -> bytes:
    return pd.DataFrame(rows, columns=list(nbaiot.COLUMNS)).to_csv(index=False, float_format="%.8g").encode()


def write_csv(path: Path, rows: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(csv_bytes(rows))
    return path


def write_per_device(root: Path, device: str, benign: int = 60, attack: int = 10,
                     skip: tuple[str, ...] = ()) -> Path:
    """A per-device directory with benign and all attack files except `skip`."""
    write_csv(root / device / nbaiot.BENIGN_FILE, device_rows(device, benign))
    for a in nbaiot.attack_names(device):
        if a not in skip:
            write_csv(root / device / nbaiot.attack_relpath(a), device_rows(device, attack, attack=a))
    return root / device


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support; can cut the first transfer of a file short."""

    cut_after_bytes: dict[str, int] = {}
    requests_seen: list[tuple[str, str | None]] = []

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        path = Path(self.translate_path(self.path))
        type(self).requests_seen.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = type(self).cut_after_bytes.pop(self.path, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


class LocalHTTPServer:
    """http://127.0.0.1:<port>/ serving `root` in a thread."""

    def __init__(self, root: Path) -> None:
        handler = type("Handler", (RangeHandler,), {"cut_after_bytes": {}, "requests_seen": []})
        self.handler = handler
        root_s = str(root)

        def factory(*args, **kwargs):
            return handler(*args, directory=root_s, **kwargs)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "LocalHTTPServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def frame_batches(frames: list[tuple[float, bytes]], size: int):
    """(timestamp, frame) pairs, e.g. the traffic simulator's, as detect's input: (batch, skip counts) of `size`
    frames each."""
    from traffic.packets import SkipCounts, frames_batch

    for start in range(0, len(frames), size):
        yield frames_batch(frames[start:start + size]), SkipCounts()


def parse_source(path) -> ast.Module:
    """ast.parse of a file with the garbage collector held off: CPython 3.11 raises "AST constructor recursion depth
    mismatch" when a finalizer that formats a traceback (itself through ast.parse) runs in the middle of one."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(Path(path).read_text())
    finally:
        if enabled:
            gc.enable()
