"""Downloader and importer against a local HTTP server on 127.0.0.1 (never the internet)."""
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from data import nbaiot
from data.download import download_devices, import_copy
from data.loader import load_device, read_feature_csv
from fediot import config
from fediot.errors import DataError
from data.sources import prepare_data
from tests.helpers import REPO, LocalHTTPServer, csv_bytes, device_rows, write_csv, write_per_device, write_stored_rar

DEVICES = ["Danmini_Doorbell", "Ennio_Doorbell"]  # Ennio has no Mirai files


def make_uci_tree(root: Path, devices=DEVICES, sums: bool = True) -> Path:
    """UCI layout: <Device>/benign_traffic.csv + gafgyt_attacks.rar (+ mirai_attacks.rar)."""
    lines = []
    for dev in devices:
        d = root / dev
        write_csv(d / nbaiot.BENIGN_FILE, device_rows(dev, 40))
        for fam, kinds in nbaiot.ATTACK_TYPES.items():
            if fam == "mirai" and dev in nbaiot.DEVICES_WITHOUT_MIRAI:
                continue
            files = {f"{k}.csv": csv_bytes(device_rows(dev, 8, attack=f"{fam}_{k}")) for k in kinds}
            write_stored_rar(d / f"{fam}_attacks.rar", files)
        for f in sorted(d.iterdir()):
            lines.append(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {dev}/{f.name}")
    if sums:
        (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return root


def make_zip_tree(root: Path, devices=DEVICES) -> Path:
    src = root / "_src"
    for dev in devices:
        write_per_device(src, dev, benign=40, attack=8)
        with zipfile.ZipFile(root / f"{dev}.zip", "w") as zf:
            for f in sorted((src / dev).rglob("*.csv")):
                zf.write(f, f.relative_to(src).as_posix())
    return root


def assert_complete(dest: Path, dev: str, benign_rows: int = 40) -> None:
    d = load_device(dest, dev)
    assert d.benign.shape == (benign_rows, 115)
    assert set(d.attacks) == set(nbaiot.attack_names(dev)) and not d.missing_attacks


def test_uci_layout_with_rar_over_http(tmp_path):
    served = make_uci_tree(tmp_path / "srv")
    with LocalHTTPServer(served) as srv:
        download_devices(tmp_path / "out", DEVICES, f"uci:{srv.url}")
        paths = [p for p, _ in srv.handler.requests_seen]
    for dev in DEVICES:
        assert_complete(tmp_path / "out", dev)
    assert np.allclose(read_feature_csv(tmp_path / "out" / "Ennio_Doorbell" / "gafgyt_attacks" / "tcp.csv"),
                       read_feature_csv(tmp_path / "out" / "Ennio_Doorbell" / "gafgyt_attacks" / "tcp.csv"))
    assert "/Ennio_Doorbell/mirai_attacks.rar" not in paths  # never asked for files Ennio lacks
    assert not (tmp_path / "out" / ".partial" / "Danmini_Doorbell").exists()


def test_per_device_zips_over_http(tmp_path):
    served = make_zip_tree(tmp_path / "srv")
    with LocalHTTPServer(served) as srv:
        download_devices(tmp_path / "out", DEVICES, f"zip:{srv.url}")
    for dev in DEVICES:
        assert_complete(tmp_path / "out", dev)


def test_interrupted_download_resumes_and_is_atomic(tmp_path):
    served = make_uci_tree(tmp_path / "srv", ["Danmini_Doorbell"])
    out = tmp_path / "out"
    with LocalHTTPServer(served) as srv:
        srv.handler.cut_after_bytes["/Danmini_Doorbell/gafgyt_attacks.rar"] = 3000
        with pytest.raises(DataError, match="run again to resume"):
            download_devices(out, ["Danmini_Doorbell"], f"uci:{srv.url}")
        assert not (out / "Danmini_Doorbell").exists()  # no half device directory
        part = out / ".partial" / "Danmini_Doorbell" / "gafgyt_attacks.rar.part"
        assert part.stat().st_size == 3000
        download_devices(out, ["Danmini_Doorbell"], f"uci:{srv.url}")
        ranges = [r for p, r in srv.handler.requests_seen if p == "/Danmini_Doorbell/gafgyt_attacks.rar"]
    assert ranges == [None, "bytes=3000-"]
    assert_complete(out, "Danmini_Doorbell")


def test_checksum_mismatch_rejected(tmp_path):
    served = make_uci_tree(tmp_path / "srv", ["Ennio_Doorbell"])
    sums = (served / "SHA256SUMS").read_text().replace("Ennio_Doorbell/benign", "Ennio_Doorbell/x").splitlines()
    sums.append("0" * 64 + "  Ennio_Doorbell/benign_traffic.csv")
    (served / "SHA256SUMS").write_text("\n".join(sums))
    with LocalHTTPServer(served) as srv:
        with pytest.raises(DataError, match="SHA-256 mismatch"):
            download_devices(tmp_path / "out", ["Ennio_Doorbell"], f"uci:{srv.url}")
    assert not (tmp_path / "out" / "Ennio_Doorbell").exists()


def test_bad_archive_content_leaves_nothing(tmp_path):
    served = make_uci_tree(tmp_path / "srv", ["Ennio_Doorbell"], sums=False)
    write_stored_rar(served / "Ennio_Doorbell" / "gafgyt_attacks.rar", {"combo.csv": b"a,b\n1,2\n"})
    with LocalHTTPServer(served) as srv:
        with pytest.raises(DataError, match=r"combo\.csv: not an N-BaIoT CSV"):
            download_devices(tmp_path / "out", ["Ennio_Doorbell"], f"uci:{srv.url}")
    assert not (tmp_path / "out" / "Ennio_Doorbell").exists()
    assert not any((tmp_path / "out" / ".staging").iterdir())


def test_http_404_is_clear(tmp_path):
    (tmp_path / "srv").mkdir()
    with LocalHTTPServer(tmp_path / "srv") as srv:
        with pytest.raises(DataError, match=r"Danmini_Doorbell/benign_traffic\.csv: HTTP 404"):
            download_devices(tmp_path / "out", ["Danmini_Doorbell"], f"uci:{srv.url}")


def test_bad_source_string():
    with pytest.raises(DataError, match="expected 'uci', 'uci:<base-url>' or 'zip:<base-url>'"):
        download_devices("/tmp/x", ["Danmini_Doorbell"], "ftp://nowhere")


def test_no_network_and_no_data_gives_guidance(tmp_path):
    cfg = config.validate({"data_args": {"dataset": "nbaiot", "data_cache_dir": str(tmp_path / "none"),
                                         "devices": ["Ecobee_Thermostat"], "download_source": "uci:http://127.0.0.1:9"}})
    with pytest.raises(DataError) as exc:
        prepare_data(cfg)
    msg = str(exc.value)
    assert "cannot connect" in msg and str(tmp_path / "none") in msg
    assert "python -m data.download" in msg and "synthetic" in msg
    cfg = config.validate({"data_args": {"dataset": "nbaiot", "data_cache_dir": str(tmp_path / "none"),
                                         "download": False}})
    with pytest.raises(DataError, match="missing for 9 device"):
        prepare_data(cfg)


def test_import_kaggle_flat_files(tmp_path):
    src = tmp_path / "kaggle"
    for dev in DEVICES:
        n = nbaiot.device_index(dev)
        write_csv(src / f"{n}.benign.csv", device_rows(dev, 40))
        for a in nbaiot.attack_names(dev):
            fam, _, kind = a.partition("_")
            write_csv(src / f"{n}.{fam}.{kind}.csv", device_rows(dev, 8, attack=a))
    (src / "device_info.csv").write_text("ignored\n")
    assert import_copy(src, tmp_path / "out") == DEVICES
    for dev in DEVICES:
        assert_complete(tmp_path / "out", dev)
    assert np.allclose(read_feature_csv(tmp_path / "out" / "Danmini_Doorbell" / "mirai_attacks" / "ack.csv"),
                       read_feature_csv(src / "1.mirai.ack.csv"))


@pytest.mark.parametrize("maker", ["uci", "zips", "per-device"])
def test_import_other_layouts_via_cli(tmp_path, maker):
    src = tmp_path / "src"
    src.mkdir()
    if maker == "uci":
        make_uci_tree(src)
    elif maker == "zips":
        make_zip_tree(src)
    else:
        for dev in DEVICES:
            write_per_device(src, dev, benign=40, attack=8)
    proc = subprocess.run([sys.executable, "-m", "data.download", "--import", str(src), "--dest", str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"({maker} layout)" in proc.stdout
    for dev in DEVICES:
        assert_complete(tmp_path / "out", dev)


def test_import_unrecognised_directory(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "data.download", "--import", str(tmp_path), "--dest", str(tmp_path / "o")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "no N-BaIoT copy recognised" in proc.stderr
    assert "Traceback" not in proc.stderr
