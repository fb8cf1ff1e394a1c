"""Issue 23: detect on a board — the federation's newest model, several watched devices, alerts where people look."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import detect
from data import nbaiot
from fediot.config import validate
from model.lean import Layer, LeanDetector, write_lean
from model.normalization import Normalizer
from tests.helpers import REPO, frame_batches
from tests.rounds import deploy_values, metrics_of, run
from traffic.alerts import Alert, AlertPublisher, RateLimiter, rfc5424
from traffic.simulator import TrafficSimulator, device_ip, device_mac

CAMERA, DOORBELL = "Provision_PT_737E_Security_Camera", "Danmini_Doorbell"


def lean_model(path: Path, thresholds: dict[str, float], global_threshold: float = 1.0, meta: dict | None = None,
               seed: int = 0) -> Path:
    """A small numpy detector (115 -> 8 -> 115, random weights) with the given thresholds."""
    rng = np.random.default_rng(seed)
    layers = [Layer(rng.normal(scale=0.05, size=(8, 115)), np.zeros(8), "tanh"),
              Layer(rng.normal(scale=0.05, size=(115, 8)), np.zeros(115), "linear")]
    normalizer = Normalizer("log1p", "zscore", np.zeros(115), np.ones(115))
    return write_lean(path, layers, normalizer, 5.0, global_threshold, thresholds, meta or {})


@pytest.fixture(scope="module")
def two_devices():
    """5 minutes of a camera's and a doorbell's benign traffic, interleaved, as one mirror port sees them."""
    packets = TrafficSimulator(CAMERA, seed=1).capture(300.0) + TrafficSimulator(DOORBELL, seed=2).capture(300.0)
    return sorted(packets, key=lambda p: p[0])


# ------------------------------------------------------------------------------------- which packets, which threshold
def test_watched_devices_each_get_their_own_threshold(tmp_path, two_devices):
    """Camera watched by IP at a threshold nothing reaches, doorbell by MAC at one everything passes: the camera's
    packets never alert, every doorbell packet does, and the doorbell's IP is learnt from its MAC."""
    model = LeanDetector.load(lean_model(tmp_path / "model.npz", {CAMERA: 1e9, DOORBELL: 1e-12}))
    out = tmp_path / "alerts.jsonl"
    watches = [detect.parse_watch(f"{CAMERA}={device_ip(CAMERA)}"),
               detect.parse_watch(f"{DOORBELL}={device_mac(DOORBELL).hex(':')}")]
    with out.open("w") as sink:
        summary = detect.run_detection(model, frame_batches(two_devices, 500), None, 1, sink, watches)
    alerts = [json.loads(line) for line in out.read_text().splitlines()]
    per = summary["devices"]
    assert per[CAMERA]["packets"] > 0 and per[CAMERA]["packet_alerts"] == 0
    assert per[DOORBELL]["packets"] > 0 and per[DOORBELL]["packet_alerts"] == per[DOORBELL]["packets"]
    assert {a["device"] for a in alerts} == {DOORBELL} and all(a["threshold"] == 1e-12 for a in alerts)
    assert summary["learnt_ips"] == {DOORBELL: [device_ip(DOORBELL)]}
    assert summary["packets_scored"] == per[CAMERA]["packets"] + per[DOORBELL]["packets"] <= summary["packets"]


def test_a_device_the_model_does_not_know_is_refused(tmp_path, capsys):
    """`--device My_Hue_Bridge` used to fall back to the global threshold without a word."""
    lean_model(tmp_path / "model.npz", {CAMERA: 1.0})
    (tmp_path / "x.pcap").write_bytes(b"")
    for args in (["--device", "My_Hue_Bridge"], ["--watch", "My_Hue_Bridge=10.0.0.9"]):
        assert detect.main([str(tmp_path), "--pcap", str(tmp_path / "x.pcap"), *args]) == 2
        err = capsys.readouterr().err
        assert "no threshold for My_Hue_Bridge" in err and CAMERA in err and "Traceback" not in err
    assert detect.main([str(tmp_path), "--pcap", str(tmp_path / "x.pcap"), "--watch", "cam=10.0.0.300"]) == 2
    assert "neither an IP nor a MAC" in capsys.readouterr().err


def test_a_watched_device_with_no_packet_is_said_not_watched(tmp_path, capsys):
    """Issue 36: watching the camera at its training IP on a capture where DHCP had given it another scored 0
    packets, printed "packets_scored": 0 and exited 0. Now: named on stderr (with the addresses it was watched by and
    the advice to watch it by its MAC), listed in the summary's silent_devices, exit status 3; a device that did send
    is not named."""
    lean_model(tmp_path / "model.npz", {CAMERA: 1.0, DOORBELL: 1.0})
    pcap = tmp_path / "cap.pcap"
    from traffic.simulator import write_pcap
    write_pcap(pcap, TrafficSimulator(CAMERA, seed=0).capture(20.0))
    out = tmp_path / "alerts.jsonl"
    code = detect.main([str(tmp_path), "--pcap", str(pcap), "--out", str(out), "--watch",
                        f"{CAMERA}={device_ip(CAMERA)}", "--watch", f"{DOORBELL}=10.9.9.9,aa:bb:cc:dd:ee:01"])
    said = capsys.readouterr()
    summary = json.loads(said.out.splitlines()[-1])
    assert code == detect.SILENT_EXIT == 3 and summary["silent_devices"] == [DOORBELL]
    assert f"warning: {DOORBELL} was not watched: no packet from or to 10.9.9.9, aa:bb:cc:dd:ee:01" in said.err
    assert "by its MAC" in said.err and CAMERA not in said.err

def test_a_model_trained_on_synthetic_rows_is_refused_on_packets(tmp_path, capsys):
    """Synthetic rows were never computed from packets: such a model flags nearly every real packet."""
    lean_model(tmp_path / "model.npz", {CAMERA: 1.0}, meta={"data": {"source": "synthetic", "generator": "rows"}})
    pcap = tmp_path / "cap.pcap"
    from traffic.simulator import write_pcap
    write_pcap(pcap, TrafficSimulator(CAMERA, seed=0).capture(20.0))
    assert detect.main([str(tmp_path), "--pcap", str(pcap)]) == 2
    assert "trained on synthetic rows" in capsys.readouterr().err
    assert detect.main([str(tmp_path), "--pcap", str(pcap), "--allow-row-model", "--out", str(tmp_path / "a")]) == 0


# ------------------------------------------------------------------------------------- following the federation
def test_a_board_keeps_its_newest_evaluated_model_for_detect(tmp_path):
    """After each evaluation a deployment client writes RUN_DIR/detector/model.npz: the evaluated model, the global
    threshold and its devices' own thresholds, as the server computed them."""
    _, _, run_dir = run(deploy_values(tmp_path, 2))
    live = LeanDetector.load(run_dir / "detector" / "model.npz")
    m = metrics_of(run_dir)
    assert live.meta["round"] == 3 and live.meta["data"]["generator"] == "rows"
    assert live.global_threshold == pytest.approx(m["global"]["modes"]["global"]["threshold"])
    for device, entry in m["devices"].items():
        assert live.device_thresholds[device] == pytest.approx(entry["modes"]["device"]["thresholds"][device])
    final = LeanDetector.load(run_dir / "model.npz")  # the server's final model: the same weights
    assert all(np.allclose(a.weight, b.weight) for a, b in zip(live.layers, final.layers))
    assert detect.live_model_path(tmp_path / "runs") == run_dir / "detector" / "model.npz"



def test_follow_picks_the_newest_board_run_that_knows_the_watched_device(tmp_path):
    """Boards tried on one machine (README's household, one host) keep their runs side by side in runs/, each board's
    model with its own device's threshold: --follow runs with --watch CAM takes CAM's board's, not the newest."""
    import os

    runs = tmp_path / "runs"
    for k, (name, device) in enumerate((("a-client1", CAMERA), ("b-client2", "hall-hub"))):
        (runs / name / "detector").mkdir(parents=True)
        lean_model(runs / name / "detector" / "model.npz", {device: 1.0}, meta={"round": 3})
        os.utime(runs / name / "detector" / "model.npz", (1e9 + k, 1e9 + k))  # client2's is the newest
    assert detect.live_model_path(runs) == runs / "b-client2" / "detector" / "model.npz"
    assert detect.live_model_path(runs, [CAMERA]) == runs / "a-client1" / "detector" / "model.npz"
    assert detect.live_model_path(runs, [None]) == runs / "b-client2" / "detector" / "model.npz"
    follower = detect.ModelFollower(runs, 1e-6, [CAMERA], False)
    detector, thresholds = follower.wait_first(timeout_s=5)
    assert thresholds == [1.0] and follower.path == runs / "a-client1" / "detector" / "model.npz"


def test_detect_follows_a_newer_model_between_batches_without_dropping_packets(tmp_path, two_devices):
    """Model after round 2 (threshold nothing reaches), then after round 4 (threshold every packet passes) written
    while detect runs: every packet is scored once, alerts start with the first batch after the swap."""
    board = tmp_path / "runs" / "20261201-000000-client-1"
    (board / "detector").mkdir(parents=True)
    lean_model(board / "detector" / "model.npz", {CAMERA: 1e9}, meta={"round": 2})
    follower = detect.ModelFollower(tmp_path / "runs", 1e-6, [CAMERA], False)
    model, _ = follower.wait_first(timeout_s=5)
    swap_at = 4
    batches = list(frame_batches(two_devices, 400))

    def feed():
        for i, b in enumerate(batches):
            if i == swap_at:  # the client's atomic write (temp file + rename) of the next evaluation
                lean_model(board / "detector" / "model.npz", {CAMERA: 1e-12}, meta={"round": 4}, seed=1)
            yield b

    out = tmp_path / "alerts.jsonl"
    with out.open("w") as sink:
        summary = detect.run_detection(model, feed(), CAMERA, 1, sink, follower=follower)
    first_after = batches[swap_at][0].time[0]
    times = [json.loads(line)["time"] for line in out.read_text().splitlines()]
    assert summary["packets"] == sum(len(b) for b, _ in batches)
    assert [s["round"] for s in summary["model_swaps"]] == [2, 4]
    assert len(times) == sum(len(b) for b, _ in batches[swap_at:]) and min(times) >= round(first_after, 6)


def test_a_broken_newer_model_is_refused_and_the_current_one_kept(tmp_path):
    lean_model(tmp_path / "model.npz", {CAMERA: 1.0}, meta={"round": 1})
    follower = detect.ModelFollower(tmp_path, 1e-6, [CAMERA], False)
    follower.wait_first(timeout_s=5)
    time.sleep(0.01)
    lean_model(tmp_path / "model.npz", {DOORBELL: 1.0}, meta={"round": 2})  # lost the watched device
    assert follower.poll(force=True) is None and follower.refused == 1
    (tmp_path / "model.npz").write_bytes(b"not an npz")
    assert follower.poll(force=True) is None and follower.refused == 2


def huge_header_npz(path, shape=(10**6, 10**6)) -> None:
    """An .npz whose one array's header claims `shape` of float32 and holds no data (issue 34: a MemoryError)."""
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("w0.npy", buf.getvalue())


def test_an_implausible_or_older_model_is_refused_and_the_current_one_kept(tmp_path):
    """Issue 34 (5): thresholds <= 0 (every packet an alert), a header claiming a (10^6, 10^6) array, an older
    round's file put back: each refused with one line, the current model kept, detect goes on."""
    lean_model(tmp_path / "model.npz", {CAMERA: 1.0}, meta={"round": 3})
    follower = detect.ModelFollower(tmp_path, 1e-6, [CAMERA], False)
    follower.wait_first(timeout_s=5)
    for n, bad in enumerate(({CAMERA: -1.0}, {CAMERA: 0.0}), start=1):
        time.sleep(0.01)
        lean_model(tmp_path / "model.npz", bad, meta={"round": 4})
        assert follower.poll(force=True) is None and follower.refused == n
    time.sleep(0.01)
    huge_header_npz(tmp_path / "model.npz")
    assert follower.poll(force=True) is None and follower.refused == 3
    time.sleep(0.01)
    lean_model(tmp_path / "model.npz", {CAMERA: 1.0}, meta={"round": 2})  # an older round's file
    assert follower.poll(force=True) is None and follower.refused == 4
    time.sleep(0.01)
    lean_model(tmp_path / "model.npz", {CAMERA: 2.0}, meta={"round": 5})
    assert follower.poll(force=True) is not None and [s["round"] for s in follower.swaps] == [3, 5]
    with pytest.raises(ValueError, match=r"claims shape \(1000000, 1000000\)"):
        huge_header_npz(tmp_path / "huge.npz")
        LeanDetector.load(tmp_path / "huge.npz")


# ------------------------------------------------------------------------------------- alerts
def test_alerts_are_rate_limited_per_device_and_host():
    limiter = RateLimiter(30.0, max_pairs=2)
    assert limiter.admit("cam", "10.0.0.1", 100.0) == 1
    assert [limiter.admit("cam", "10.0.0.1", 100.0 + i) for i in range(1, 5)] == [None] * 4
    assert limiter.admit("cam", "10.0.0.1", 131.0) == 5  # stands for the 4 held back and itself
    assert limiter.admit("cam", "10.0.0.2", 131.0) == 1 and limiter.admit("bell", "10.0.0.1", 131.0) == 1
    assert len(limiter.last) == 2  # bounded: the least recently alerted pair forgotten


def test_an_rfc5424_message_has_every_field_and_escapes_structured_data():
    msg = rfc5424(Alert('cam"]\\', "10.0.0.7", 1.5e9, 3.25, 0.5, 4), "board 1", now=0.0).decode("utf-8")
    m = re.fullmatch(r'<(\d+)>1 (\S+) (\S+) fediot-detect (\d+) ALERT (\[fediot@32473 .*\]) \ufeff(.*)', msg)
    assert m, msg
    assert int(m.group(1)) == 4 * 8 + 4 and m.group(2) == "1970-01-01T00:00:00.000Z" and m.group(3) == "board1"
    assert 'device="cam\\"\\]\\\\"' in m.group(5) and 'alerts="4"' in m.group(5) and "3.25" in m.group(6)


@pytest.mark.parametrize("scheme", ["udp", "tcp"])
def test_window_alerts_reach_a_syslog_collector_rate_limited(tmp_path, two_devices, scheme):
    """Every doorbell packet alerts; the collector gets exactly one message per source host (the rate limit's
    interval is longer than the capture), each naming the device and the host."""
    kind = socket.SOCK_DGRAM if scheme == "udp" else socket.SOCK_STREAM
    srv = socket.socket(socket.AF_INET, kind)
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    received: list[bytes] = []
    if scheme == "tcp":
        srv.listen(1)

    def collect():
        if scheme == "udp":
            srv.settimeout(10)
            try:
                while True:
                    received.append(srv.recv(65535))
            except OSError:
                return
        conn, _ = srv.accept()
        data = b""
        conn.settimeout(10)
        try:
            while chunk := conn.recv(65535):
                data += chunk
        except OSError:
            pass
        while data:  # octet counting: LEN SP MSG
            n, _, rest = data.partition(b" ")
            received.append(rest[:int(n)])
            data = rest[int(n):]

    t = threading.Thread(target=collect, daemon=True)
    t.start()
    model = LeanDetector.load(lean_model(tmp_path / "model.npz", {DOORBELL: 1e-12, CAMERA: 1e9}))
    cfg = validate({"detect_args": {"syslog": f"{scheme}://127.0.0.1:{port}", "alert_interval_s": 1e6}}).detect
    publisher = AlertPublisher(detect.network_sinks(cfg, "board-1", [DOORBELL, CAMERA]), cfg.alert_queue)
    watches = [detect.parse_watch(f"{DOORBELL}={device_ip(DOORBELL)}"), detect.parse_watch(f"{CAMERA}={device_ip(CAMERA)}")]
    with (tmp_path / "alerts.jsonl").open("w") as sink:
        summary = detect.run_detection(model, frame_batches(two_devices, 500), None, 1, sink, watches, cfg,
                                       publisher=publisher)
    publisher.close()
    srv.close() if scheme == "udp" else None
    t.join(15)
    lines = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    hosts = {a["host"] for a in lines if a["window_alert"]}
    msgs = [m.decode("utf-8") for m in received]
    assert len(msgs) == len(hosts) == publisher.counts["sent"] and summary["window_alerts"] > 10 * len(hosts)
    assert all(DOORBELL in m and " ALERT " in m for m in msgs)
    assert {re.search(r'host="([^"]+)"', m).group(1) for m in msgs} == hosts
    # issue 36: the first window alert of the episode says why, in a household's words, and so does the first of each
    # other remote endpoint in it (detect_args.explain_remotes of them); the flood's other lines do not
    explained = [a for a in lines if "why" in a]
    first = next(a for a in lines if a["window_alert"])
    remotes = [a["remote"] for a in explained]
    assert explained[0] == first and len(set(remotes)) == len(remotes) <= cfg.explain_remotes
    assert all(a["window_alert"] for a in explained) and len(explained) < summary["window_alerts"] / 10
    for a in explained:
        assert 1 <= len(a["why"]) <= detect.EXPLAIN_GROUPS
        assert all(r["meaning"] == nbaiot.GROUP_MEANINGS[r["group"]] and 0 < r["share"] <= 1 for r in a["why"])
        assert [r["share"] for r in a["why"]] == sorted((r["share"] for r in a["why"]), reverse=True)
        # against the device's normal: each group's most deviating feature, its value and what the model expected
        assert all(nbaiot.group_of(r["feature"]) == r["group"] and "value" in r and "normal" in r for r in a["why"])
    assert "mostly " + first["why"][0]["meaning"] in msgs[0]  # the first message carries it to syslog
    assert "its normal" in msgs[0]


def test_network_sinks_never_block_detection():
    """A sink that hangs: offers beyond the queue are dropped and counted, at once."""
    class Stuck:
        def __init__(self):
            self.release = threading.Event()

        def send(self, alert):
            self.release.wait(10)

        def close(self):
            pass

    stuck = Stuck()
    pub = AlertPublisher([stuck], capacity=3)
    started = time.perf_counter()
    results = [pub.offer(Alert("cam", "h", float(i), 1.0, 0.5, 1)) for i in range(100)]
    # an offer that waited for the stuck sink would wait its 10 s: far below that, whatever else the machine runs
    assert time.perf_counter() - started < 5.0 and sum(results) <= 4 and pub.counts["dropped_queue_full"] >= 96
    stuck.release.set()
    pub.close()


def mosquitto() -> str:
    path = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    assert Path(path).is_file(), "mosquitto is needed (apt-get install mosquitto; .ci/run installs it)"
    return path


@pytest.fixture
def broker(tmp_path):
    """A real MQTT broker (mosquitto) on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([mosquitto(), "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(10)


def test_alerts_reach_home_assistant_over_a_real_mqtt_broker(tmp_path, two_devices, broker):
    """Discovery config (retained) per watched device, state ON with the alert as JSON attributes, availability."""
    import paho.mqtt.client as mqtt

    got: dict[str, list[str]] = {}
    kwargs = {"callback_api_version": mqtt.CallbackAPIVersion.VERSION2} if hasattr(mqtt, "CallbackAPIVersion") else {}
    sub = mqtt.Client(client_id="test-subscriber", **kwargs)
    sub.on_message = lambda c, u, m: got.setdefault(m.topic, []).append(m.payload.decode())
    sub.connect("127.0.0.1", broker)
    sub.subscribe([("homeassistant/#", 1), ("fediot/#", 1)])
    sub.loop_start()
    time.sleep(0.5)
    model = LeanDetector.load(lean_model(tmp_path / "model.npz", {DOORBELL: 1e-12, CAMERA: 1e9}))
    cfg = validate({"detect_args": {"mqtt_broker": f"127.0.0.1:{broker}", "alert_interval_s": 1e6}}).detect
    publisher = AlertPublisher(detect.network_sinks(cfg, "board-1", [DOORBELL, CAMERA]), cfg.alert_queue)
    watches = [detect.parse_watch(f"{DOORBELL}={device_ip(DOORBELL)}"), detect.parse_watch(f"{CAMERA}={device_ip(CAMERA)}")]
    with (tmp_path / "alerts.jsonl").open("w") as sink:
        detect.run_detection(model, frame_batches(two_devices, 500), None, 1, sink, watches, cfg, publisher=publisher)
    publisher.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and got.get("fediot/board-1/status", [])[-1:] != ["offline"]:
        time.sleep(0.1)
    sub.loop_stop()
    config = json.loads(got[f"homeassistant/binary_sensor/fediot_board-1_{DOORBELL}/config"][0])
    assert config["device_class"] == "safety" and config["state_topic"] == f"fediot/board-1/{DOORBELL}/state"
    assert config["json_attributes_topic"] == f"fediot/board-1/{DOORBELL}/alert"
    assert f"homeassistant/binary_sensor/fediot_board-1_{CAMERA}/config" in got
    assert got[f"fediot/board-1/{DOORBELL}/state"] == ["OFF", "ON"] and got[f"fediot/board-1/{CAMERA}/state"] == ["OFF"]
    alert = json.loads(got[f"fediot/board-1/{DOORBELL}/alert"][0])
    assert alert["threshold"] == 1e-12 and alert["alerts"] == 1 and alert["score"] > 0
    assert got["fediot/board-1/status"][0] == "online" and got["fediot/board-1/status"][-1] == "offline"
    assert publisher.counts["failed"] == 0


def test_detect_summary_reports_its_memory_bounds(tmp_path, two_devices):
    model = LeanDetector.load(lean_model(tmp_path / "model.npz", {CAMERA: 1.0}))
    cfg = validate({"detect_args": {"max_streams": 100}}).detect
    with (tmp_path / "a.jsonl").open("w") as sink:
        s = detect.run_detection(model, frame_batches(two_devices, 300), CAMERA, 5, sink, cfg=cfg)
    assert s["memory"]["sweeps"] > 0 and max(s["memory"]["tracked"][k] for k in ("mi", "h", "hh", "hp")) <= 100 + 2 * 300


def test_commands_run_from_any_directory_through_the_launcher(tmp_path):
    """The installed `fediot` command (and bin/fediot, which runs it) runs detect and capture from any directory
    with paths taken from the caller's directory; so does `python -m detect` (the project is installed, editable)."""
    lean_model(tmp_path / "model.npz", {CAMERA: 1.0})
    from traffic.simulator import write_pcap
    write_pcap(tmp_path / "cap.pcap", TrafficSimulator(CAMERA, seed=0).capture(30.0))
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run([str(REPO / "bin" / "fediot"), "detect", ".", "--pcap", "cap.pcap", "--device", CAMERA,
                           "--out", "alerts.jsonl", "--state", "state/detect.npz"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["packets"] > 0 and (tmp_path / "alerts.jsonl").is_file()
    assert summary["state"]["saved"] >= 1 and (tmp_path / "state" / "detect.npz").is_file()  # --state, from the CLI
    proc = subprocess.run([str(REPO / "bin" / "fediot"), "capture", "--pcap", "cap.pcap", "--device",
                           f"cam={device_ip(CAMERA)}", "--out", "mine", "--simulate-attacks", "none"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "mine" / "cam" / "benign_traffic.csv").is_file()
    proc = subprocess.run([str(REPO / "bin" / "fediot"), "nope"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown command" in proc.stderr and "fediot detect" in proc.stderr
    assert (Path(sys.executable).parent / "fediot").is_file()  # the installed command bin/fediot runs
    proc = subprocess.run([sys.executable, "-c", "import detect, federation.client, fediot.cli; print(detect.__file__)"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env={k: v for k, v in env.items()
                                                                                         if k != "PYTHONPATH"})
    assert proc.returncode == 0 and proc.stdout.strip() == str(REPO / "detect.py"), proc.stderr


def test_detect_tells_the_board_and_prometheus_what_it_sees(tmp_path, two_devices):
    """With --follow, detect keeps its counters in the board's run directory (detect_status.json, which the board's
    health reports carry to the server) and serves them on /metrics (Prometheus' parser reads them)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from monitor.health import DETECT_STATUS_FILE, HealthProbe, WarningBuffer

    board = tmp_path / "runs" / "20261201-000000-client-1"
    (board / "detector").mkdir(parents=True)
    lean_model(board / "detector" / "model.npz", {CAMERA: 1e-12}, meta={"round": 3})
    follower = detect.ModelFollower(tmp_path / "runs", 1e-6, [CAMERA], False)
    model, _ = follower.wait_first(timeout_s=5)
    live = detect.LiveCounters(1e-9, follower)  # every batch
    server = detect.serve_metrics(live, 0, "127.0.0.1", None)
    publisher = detect.AlertPublisher([live], 1000)  # the counters are a sink of the alert messages, as with --follow
    try:
        batches = list(frame_batches(two_devices, 400))
        with (tmp_path / "alerts.jsonl").open("w") as sink:
            summary = detect.run_detection(model, iter(batches), CAMERA, 1, sink, follower=follower, live=live,
                                           publisher=publisher)
        status = json.loads((board / DETECT_STATUS_FILE).read_text())
        publisher.close()
        live.next_write = 0.0  # the status file once more, with every alert message the publisher has sent
        live.update(summary["packets"], summary["packets_scored"], summary["packet_alerts"], summary["window_alerts"],
                    summary["devices"], 3, lambda: 0)
        reported = json.loads((board / DETECT_STATUS_FILE).read_text())["alerts"]
        families = {f.name: f for f in text_string_to_metric_families(
            urllib.request.urlopen(server.url + "metrics", timeout=10).read().decode())}
    finally:
        server.stop()
    assert status["packets"] == summary["packets"] and status["model_round"] == 3
    assert status["window_alerts"] == summary["window_alerts"] > 0 and status["packets_per_s"] > 0
    # its latest alert messages (what syslog / MQTT carry), for the server's page: at most DETECT_ALERTS, newest last
    from monitor.health import DETECT_ALERTS
    assert 0 < len(reported) <= DETECT_ALERTS, reported
    assert all(a["device"] == CAMERA and a["state"] in ("ON", "OFF") for a in reported)
    assert [a["time"] for a in reported] == sorted(a["time"] for a in reported)
    assert families["fediot_detect_packets"].samples[0].value == summary["packets"]
    alerts = {s.labels["device"]: s.value for s in families["fediot_detect_window_alerts"].samples}
    assert alerts == {CAMERA: summary["devices"][CAMERA]["window_alerts"]}
    assert families["fediot_detect_model_round"].samples[0].value == 3
    # the board's health report carries it while it is fresh, and not once it is stale
    probe = HealthProbe(board, WarningBuffer(5, 300), 30.0, board / "health.json")
    assert probe.fields(3)["detect"]["window_alerts"] == summary["window_alerts"]
    (board / DETECT_STATUS_FILE).write_text(json.dumps({**status, "written_at": status["written_at"] - 31}))
    assert probe.fields(3)["detect"] is None


def test_a_restarted_board_with_its_state_scores_as_if_it_had_never_stopped(tmp_path, two_devices, capsys):
    """detect --state: the doorbell watched over the first half of the traffic, stopped, then started again on the
    second half with the state file: every packet of the second half gets the score it gets when watched without a
    break (a restart without the state scores them differently); a state newer than the packets (a capture replayed)
    is set aside, said, and detection starts afresh."""
    model = LeanDetector.load(lean_model(tmp_path / "model.npz", {DOORBELL: 1e-12}))
    watches = [detect.parse_watch(f"{DOORBELL}={device_ip(DOORBELL)}")]
    cfg = validate({}).detect
    half = len(two_devices) // 2 // 256 * 256  # at a batch boundary: the extractor's sweeps fall where they fell

    def scores(packets, name: str, state: Path | None) -> tuple[dict, list[tuple[float, float]]]:
        out = tmp_path / name
        with out.open("w") as sink:
            summary = detect.run_detection(model, frame_batches(packets, 256), None, 5, sink, watches, cfg,
                                           state_path=state)
        return summary, [(x["time"], x["score"]) for x in map(json.loads, out.read_text().splitlines())]

    _, whole = scores(two_devices, "whole.jsonl", None)
    state = tmp_path / "board" / "state.npz"
    first, _ = scores(two_devices[:half], "first.jsonl", state)
    assert first["state"] == {"path": str(state), "restored": False, "saved": 1} and state.is_file()
    second, resumed = scores(two_devices[half:], "second.jsonl", state)
    assert second["state"]["restored"] is True and "streams remembered" in capsys.readouterr().err
    assert resumed and resumed == whole[-len(resumed):]
    _, afresh = scores(two_devices[half:], "afresh.jsonl", None)
    assert [s for _, s in afresh] != [s for _, s in resumed]
    replayed, _ = scores(two_devices[:half], "replayed.jsonl", state)
    assert replayed["state"]["restored"] is False and "newer than the packets" in capsys.readouterr().err
