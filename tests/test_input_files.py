"""Issue 34 (5, 7, 8): every file the product reads works or gives one clear error naming the file.

The reproductions (a pcap record claiming a 2^31-byte caplen, a pcapng block claiming 0xFFFFFFF0 bytes, YAML that
nests, aliases, repeats keys or is not UTF-8, values far out of range) and a seeded fuzzer: valid pcap, pcapng,
model.npz, CSV and YAML files with bytes flipped, cut short or overwritten, each read through the function the
commands use; anything but a result or the product's own error (what the commands print as one `error:` line)
fails the test."""
from __future__ import annotations

import io
import random
import struct
from pathlib import Path

import dpkt
import numpy as np
import pytest

import capture
from data import nbaiot
from data.loader import read_feature_csv
from detect import load_detector
from fediot.config import load
from fediot.errors import ConfigError, FedIoTError
from model.lean import Layer, write_lean
from model.normalization import Normalizer
from traffic.packets import read_capture
from traffic.simulator import TrafficSimulator, write_pcap

IP = "192.168.1.42"
MUTATIONS = 120  # per file kind; seeded


@pytest.fixture(scope="module")
def frames():
    return TrafficSimulator("Provision_PT_737E_Security_Camera", seed=5, ip=IP).capture(120.0)


def pcapng_bytes(frames) -> bytes:
    buf = io.BytesIO()
    writer = dpkt.pcapng.Writer(buf, linktype=dpkt.pcap.DLT_EN10MB)
    for t, f in frames:
        writer.writepkt(f, ts=t)
    return buf.getvalue()


def read_all(path: Path) -> int:
    return sum(len(b) for b, _ in read_capture(path, batch_size=4096))


def test_a_pcap_record_claiming_two_gigabytes_is_one_error_and_nothing_is_written(tmp_path, frames):
    path = write_pcap(tmp_path / "cap.pcap", frames)
    data = bytearray(path.read_bytes())
    pos = 24
    for _ in range(921):  # to record 922's header
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    struct.pack_into("<I", data, pos + 8, 1 << 31)
    path.write_bytes(bytes(data))
    with pytest.raises(FedIoTError, match=r"cap.pcap: corrupt capture: record 922 claims a captured length of "
                                          r"2147483648 bytes"):
        read_all(path)
    out = tmp_path / "local"
    assert capture.main(["--pcap", str(path), "--device", f"cam={IP}", "--out", str(out),
                         "--simulate-attacks", "none"]) == 2
    assert not (out / "cam").exists()


def test_a_pcapng_block_claiming_four_gigabytes_is_one_error(tmp_path, frames):
    data = bytearray(pcapng_bytes(frames))
    pos = 0
    while struct.unpack_from("<I", data, pos)[0] != 6:  # the first enhanced packet block
        pos += struct.unpack_from("<I", data, pos + 4)[0]
    struct.pack_into("<I", data, pos + 4, 0xFFFFFFF0)
    path = tmp_path / "cap.pcapng"
    path.write_bytes(bytes(data))
    with pytest.raises(FedIoTError, match=f"block at byte {pos} claims 4294967280 bytes"):
        read_all(path)


def test_a_pcapng_cut_short_keeps_what_was_read(tmp_path, frames):
    data = pcapng_bytes(frames)
    (tmp_path / "whole.pcapng").write_bytes(data)
    (tmp_path / "cut.pcapng").write_bytes(data[:len(data) // 2])
    whole, cut = read_all(tmp_path / "whole.pcapng"), read_all(tmp_path / "cut.pcapng")
    assert whole == len(frames) and 0 < cut < whole


@pytest.mark.parametrize("text,error", [
    ("a: " + "[" * 5000 + "]" * 5000, "nested deeper than 16 levels"),
    ("a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n",
     r"an alias \(\*name\) at line 2"),
    ("train_args:\n  comm_round: 3\n  comm_round: 5\n", "key 'comm_round' given twice"),
    ("train_args:\n  comm_round: 100000000000\n", r"train_args.comm_round = 100000000000; expected an integer in 1..100000"),
    ("train_args:\n  epochs: 1000000000\n", r"train_args.epochs = 1000000000; expected an integer in 1..10000"),
    (b"train_args:\n  comm_round: \xff\xfe\n", r"not UTF-8 text \(byte 26, line 2\)"),
])
def test_a_hostile_config_is_one_clear_error(tmp_path, text, error):
    path = tmp_path / "c.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=error) as e:
        load(path)
    assert str(path) in str(e.value)


def _mutants(data: bytes, rng: random.Random, n: int):
    """n damaged copies of data: bytes flipped, a 4-byte field overwritten with an extreme value, cut short, a
    stretch duplicated or removed."""
    for _ in range(n):
        b = bytearray(data)
        kind = rng.randrange(5)
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind == 1:
            at = rng.randrange(max(1, len(b) - 4))
            b[at:at + 4] = struct.pack("<I", rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFF0, 1 << 31]))
        elif kind == 2:
            del b[rng.randrange(len(b)):]
        elif kind == 3:
            at, n_bytes = rng.randrange(len(b)), rng.randint(1, 64)
            b[at:at] = b[at:at + n_bytes]
        else:
            at = rng.randrange(len(b))
            del b[at:at + rng.randint(1, 64)]
        yield bytes(b)


def _model_bytes(tmp_path: Path) -> bytes:
    rng = np.random.default_rng(0)
    layers = [Layer(rng.normal(size=(8, 135)), np.zeros(8), "tanh"), Layer(rng.normal(size=(135, 8)), np.zeros(135),
                                                                          "linear")]
    path = write_lean(tmp_path / "seed.npz", layers, Normalizer("log1p", "zscore", np.zeros(135), np.ones(135)), 5.0,
                      1.0, {"cam": 0.5}, {"round": 1})
    return path.read_bytes()


def _csv_bytes() -> bytes:
    rows = np.random.default_rng(0).random((20, nbaiot.N_CAPTURED_FEATURES))
    return (",".join(nbaiot.CAPTURED_COLUMNS) + "\n" + "\n".join(",".join(f"{v:.6g}" for v in r) for r in rows)
            + "\n").encode()


def test_damaged_files_work_or_give_one_clear_error(tmp_path, frames):
    """The seeded fuzzer: every mutant is read as the commands read it; the product's own error or a result."""
    readers = {
        "cap.pcap": (write_pcap(tmp_path / "seed.pcap", frames).read_bytes(), read_all, FedIoTError),
        "cap.pcapng": (pcapng_bytes(frames), read_all, FedIoTError),
        "model.npz": (_model_bytes(tmp_path), lambda p: load_detector(p), FedIoTError),
        "benign_traffic.csv": (_csv_bytes(), lambda p: read_feature_csv(p, nbaiot.CAPTURED_COLUMNS), FedIoTError),
        "config.yaml": (Path("config/fedml_config.yaml").read_bytes(), load, FedIoTError),
    }
    rng = random.Random(34)
    outcomes: dict[str, dict[str, int]] = {}
    for name, (data, read, expected) in readers.items():
        d = tmp_path / name.replace(".", "_")
        d.mkdir()
        path = d / name
        counts = outcomes.setdefault(name, {"read": 0, "error": 0})
        for i, mutant in enumerate(_mutants(data, rng, MUTATIONS)):
            path.write_bytes(mutant)
            try:
                read(path)
                counts["read"] += 1
            except expected as exc:
                assert str(path) in str(exc) or path.name in str(exc), (name, i, exc)
                counts["error"] += 1
            except Exception as exc:  # noqa: BLE001 - what the test is for
                pytest.fail(f"{name} mutant {i}: {type(exc).__name__}: {exc}")
    assert all(c["error"] > 0 for c in outcomes.values()), outcomes  # the fuzzer did damage each kind
