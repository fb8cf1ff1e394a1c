"""Issue 23: your own devices — capture their traffic into rows, learn them federated, evaluate with simulated attacks."""
from __future__ import annotations

import json

import numpy as np
import pytest

import capture
from data import nbaiot
from data.loader import read_feature_csv
from fediot.config import validate
from fediot.errors import ConfigError
from tests.rounds import metrics_of, run, sim_values
from traffic.afterimage import FEATURES_VERSION, FeatureExtractor
from traffic.packets import read_capture
from traffic.profile import PROFILE_FILE, EndpointProfile
from traffic.simulator import TrafficSimulator, write_pcap
from traffic.watch import Watcher, parse_watch

# two devices of "your own" LAN: a camera and a plug, on addresses of the user's choosing
CAM_IP, CAM_MAC = "10.20.0.5", bytes.fromhex("3c71bf000005")
PLUG_IP, PLUG_MAC = "10.20.0.9", bytes.fromhex("3c71bf000009")


def lan_pcap(path, seconds: float, seed: int = 0):
    cam = TrafficSimulator("Provision_PT_737E_Security_Camera", seed, ip=CAM_IP, mac=CAM_MAC).capture(seconds)
    plug = TrafficSimulator("Ennio_Doorbell", seed + 1, ip=PLUG_IP, mac=PLUG_MAC).capture(seconds)
    packets = sorted(cam + plug, key=lambda p: p[0])
    write_pcap(path, packets)
    return packets


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("capture")
    lan_pcap(tmp / "lan.pcap", 400.0)
    code = capture.main(["--pcap", str(tmp / "lan.pcap"), "--device", f"my_cam={CAM_IP}",
                         "--device", f"hall-plug={PLUG_MAC.hex(':')}", "--out", str(tmp / "local"),
                         "--simulate-attacks", "mirai_syn,gafgyt_udp,mirai_scan", "--attack-seconds", "10"])
    assert code == 0
    return tmp


def test_capture_writes_each_device_its_rows_with_provenance(captured):
    """Rows are the features `detect` computes for the device's packets (the same extractor, over every packet),
    one row per packet from or to the device's addresses; a MAC-named device's IP is learnt."""
    ex = FeatureExtractor()
    watcher = Watcher([parse_watch(f"my_cam={CAM_IP}"), parse_watch(f"hall-plug={PLUG_MAC.hex(':')}")])
    want = {0: [], 1: []}
    for batch, _ in read_capture(captured / "lan.pcap", batch_size=4096):
        rows, which = ex.transform(batch), watcher.of(batch)
        for i in (0, 1):
            want[i].append(rows[which == i])
    for i, name in enumerate(("my_cam", "hall-plug")):
        got = read_feature_csv(captured / "local" / name / nbaiot.BENIGN_FILE, nbaiot.CAPTURED_COLUMNS)
        assert got.shape == np.vstack(want[i]).shape and np.allclose(got, np.vstack(want[i]), rtol=1e-9)
        prov = json.loads((captured / "local" / name / "provenance.json").read_text())
        c = prov["captures"][0]
        assert prov["rows"] == len(got) == c["packets_of_device"] and prov["features_version"] == FEATURES_VERSION
        assert c["source"].endswith("lan.pcap") and c["first_packet"] < c["last_packet"] and c["packets_seen"] > len(got)
        # whom it talked to, one count per packet of the device (detect --profiles)
        profile = EndpointProfile.load(captured / "local" / name / PROFILE_FILE, 4096)
        assert sum(profile.packets.values()) == len(got) and ("internet", "remote", 443) in profile.packets
    assert json.loads((captured / "local" / "hall-plug" / "provenance.json").read_text())["captures"][0]["filter"] == {
        "ips": [PLUG_IP], "macs": [PLUG_MAC.hex(":")]}


def test_simulated_attacks_come_from_the_device_and_are_recorded(captured):
    prov = json.loads((captured / "local" / "my_cam" / "provenance.json").read_text())
    assert set(prov["simulated_attacks"]) == {"mirai_syn", "gafgyt_udp", "mirai_scan", "seconds_each", "from_capture"}
    syn = read_feature_csv(captured / "local" / "my_cam" / "simulated_attacks" / "mirai_syn.csv", nbaiot.CAPTURED_COLUMNS)
    benign = read_feature_csv(captured / "local" / "my_cam" / nbaiot.BENIGN_FILE, nbaiot.CAPTURED_COLUMNS)
    assert len(syn) == prov["simulated_attacks"]["mirai_syn"] > 1000  # 1,500 SYN/s for 10 s, plus its own packets
    h_weight = nbaiot.COLUMNS.index("H_L0.1_weight")
    assert np.median(syn[:, h_weight]) > 10 * np.median(benign[:, h_weight])  # the device's host stream floods


def test_append_adds_rows_and_a_capture_record_and_refuses_to_overwrite(captured, tmp_path, capsys):
    lan_pcap(tmp_path / "later.pcap", 120.0, seed=5)
    args = ["--pcap", str(tmp_path / "later.pcap"), "--device", f"my_cam={CAM_IP}", "--out", str(captured / "local"),
            "--simulate-attacks", "none"]
    before = len(read_feature_csv(captured / "local" / "my_cam" / nbaiot.BENIGN_FILE, nbaiot.CAPTURED_COLUMNS))
    assert capture.main(args) == 2 and "exists: --append" in capsys.readouterr().err
    assert capture.main([*args, "--append"]) == 0
    prov = json.loads((captured / "local" / "my_cam" / "provenance.json").read_text())
    after = read_feature_csv(captured / "local" / "my_cam" / nbaiot.BENIGN_FILE, nbaiot.CAPTURED_COLUMNS)
    assert len(prov["captures"]) == 2 and prov["rows"] == len(after) == before + prov["captures"][1]["packets_of_device"]
    assert "mirai_syn" in prov["simulated_attacks"]  # the earlier capture's simulated attacks stay
    # both captures' seconds count, and less than detect_args.min_capture_s of traffic is warned about
    spans = [c["last_packet"] - c["first_packet"] for c in prov["captures"]]
    assert prov["seconds"] == pytest.approx(sum(spans), abs=1e-3) and 400 < prov["seconds"] < 520
    assert f"warning: my_cam: {prov['seconds']:.0f} s of its traffic in all" in capsys.readouterr().err


def test_capture_refuses_bad_input_with_one_line(tmp_path, capsys):
    for args, says in ((["--pcap", str(tmp_path / "no.pcap"), "--device", "cam=10.0.0.1"], "not found"),
                       (["--pcap", str(tmp_path / "no.pcap"), "--device", "../evil=10.0.0.1"], "device name"),
                       (["--pcap", str(tmp_path / "no.pcap"), "--device", "cam=10.0.0.1", "--simulate-attacks", "x"],
                        "unknown"),
                       (["--interface", "lo", "--device", "cam=10.0.0.1"], "--duration")):
        assert capture.main(args + ["--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_local_device_names_are_validated_as_names():
    assert validate({"data_args": {"dataset": "local", "devices": ["my_cam", "hall-plug"]}}).devices == ["my_cam", "hall-plug"]
    for bad in (["../x"], ["a b"], "all", [""]):
        with pytest.raises(ConfigError, match="data_args.devices"):
            validate({"data_args": {"dataset": "local", "devices": bad}})
    with pytest.raises(ConfigError, match="dataset: local"):
        validate({"data_args": {"devices": ["my_cam"]}})  # nbaiot names only, and the error says where yours go


def test_your_own_devices_learn_federated_and_are_evaluated_on_simulated_attacks(captured, tmp_path):
    """data_args.dataset: local with the captured devices: a federated run; FPR on their held-out benign rows, TPR
    on the simulated attacks, which metrics.json says are simulated."""
    values = sim_values(tmp_path, data_args__dataset="local", data_args__devices=["my_cam", "hall-plug"],
                        data_args__local_data_dir=str(captured / "local"), train_args__client_num_in_total=2,
                        train_args__client_num_per_round=2, train_args__comm_round=3, train_args__epochs=3,
                        data_args__attack_test_rows=400, train_args__byzantine_clients=0)
    said: list[str] = []
    _, _, run_dir = run(values, said=said)
    m = metrics_of(run_dir)
    assert m["data"]["source"] == "local" and "SIMULATED" in m["data"]["attacks"]
    assert set(m["data"]["provenance"]) == {"my_cam", "hall-plug"}
    cam = m["devices"]["my_cam"]["modes"]["device"]
    assert set(cam["attacks"]) == {"mirai_syn", "gafgyt_udp", "mirai_scan"}
    assert cam["attacks"]["mirai_syn"]["tpr"] > 0.9 and cam["fpr"] < 0.1
    assert "Attack rows are simulated" in (run_dir / "report.md").read_text()


def test_a_local_device_without_captured_rows_says_how_to_capture(tmp_path):
    from data.sources import prepare_data
    from fediot.errors import DataError

    cfg = validate({"data_args": {"dataset": "local", "devices": ["my_cam"], "local_data_dir": str(tmp_path)}})
    with pytest.raises(DataError, match="python -m capture"):
        prepare_data(cfg)


def test_list_hosts_names_the_devices_of_a_capture(tmp_path, capsys):
    """Issue 36: finding a device's address needed tcpdump. --list-hosts lists the capture's LAN hosts with their MACs
    and counts (busiest first), writes nothing, and needs no --device; without --list-hosts, --device is asked for."""
    packets = lan_pcap(tmp_path / "lan.pcap", 60.0)
    assert capture.main(["--pcap", str(tmp_path / "lan.pcap"), "--list-hosts", "--json", "--out",
                         str(tmp_path / "local")]) == 0
    listed = json.loads(capsys.readouterr().out)
    hosts = {h["ip"]: h for h in listed["hosts"]}
    assert {CAM_IP, PLUG_IP} <= set(hosts) and not (tmp_path / "local").exists()
    assert hosts[CAM_IP]["macs"] == [CAM_MAC.hex(":")] and hosts[PLUG_IP]["macs"] == [PLUG_MAC.hex(":")]
    assert hosts[CAM_IP]["sent"] > 0 and hosts[CAM_IP]["received"] > 0
    assert hosts[CAM_IP]["first_seen"] <= hosts[CAM_IP]["last_seen"]
    import ipaddress

    assert all(ipaddress.ip_address(h["ip"]).is_private for h in listed["hosts"])  # the internet is summed, not listed
    assert listed["remote_packets"] > 0 and sum(h["sent"] for h in listed["hosts"]) + listed["remote_packets"] <= len(packets)
    assert capture.main(["--pcap", str(tmp_path / "lan.pcap"), "--list-hosts"]) == 0
    table = capsys.readouterr().out
    assert CAM_IP in table and CAM_MAC.hex(":") in table and "LAN host(s)" in table
    assert capture.main(["--pcap", str(tmp_path / "lan.pcap"), "--out", str(tmp_path / "local")]) == 2
    assert "--list-hosts lists them" in capsys.readouterr().err


def test_a_device_that_goes_quiet_is_a_silent_alert(captured, tmp_path, capsys):
    """Issue 36: a watched device that stops sending (unplugged, dead, moved) raised nothing. capture records each
    device's longest silence (provenance.json); detect --profiles says once, in a line and to the network sinks, when
    a device has been silent for silence_factor times that (at least silence_min_s), and counts it in the summary; a
    device that keeps talking is never named."""
    import yaml

    import detect
    from tests.test_watch import lean_model

    prov = json.loads((captured / "local" / "hall-plug" / "provenance.json").read_text())
    longest = prov["longest_silence_s"]
    assert 0 < longest == prov["captures"][0]["longest_silence_s"] < 60  # the simulated plug talks every few seconds
    seconds, quiet_from = 240.0, 60.0
    packets = lan_pcap(tmp_path / "all.pcap", seconds, seed=7)
    start = packets[0][0]
    plug_ip = bytes(int(x) for x in PLUG_IP.split("."))
    from traffic.simulator import write_pcap

    write_pcap(tmp_path / "quiet.pcap", [p for p in packets if p[0] - start < quiet_from or plug_ip not in p[1]])
    cfg = tmp_path / "detect.yaml"
    cfg.write_text(yaml.safe_dump({"detect_args": {"silence_min_s": 30.0, "silence_factor": 2.0}}))
    lean_model(tmp_path / "model.npz", {"my_cam": 1e9, "hall-plug": 1e9})
    out = tmp_path / "alerts.jsonl"
    code = detect.main([str(tmp_path / "model.npz"), "--pcap", str(tmp_path / "quiet.pcap"), "--config", str(cfg),
                        "--watch", f"my_cam={CAM_IP}", "--watch", f"hall-plug={PLUG_MAC.hex(':')}",
                        "--profiles", str(captured / "local"), "--out", str(out)])
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    silent = [json.loads(x) for x in out.read_text().splitlines() if '"silent"' in x]
    assert code == 0 and [s["device"] for s in silent] == ["hall-plug"]
    limit = max(30.0, 2.0 * longest)
    assert silent[0]["silent_after_s"] == round(limit, 1) and limit < silent[0]["silent_s"] <= limit + 10
    assert start + quiet_from + limit <= silent[0]["time"] <= start + quiet_from + limit + 10
    assert summary["devices"]["hall-plug"]["silent_alerts"] == 1 and summary["devices"]["my_cam"]["silent_alerts"] == 0
