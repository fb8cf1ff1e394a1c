"""Triage of alerts (issue 36): detect keeps each alert episode's rows and remotes; a mute stops its alerts reaching
syslog/MQTT (still written, marked); a benign verdict adds the episode's rows to the device's training rows, bounded
by detect_args.benign_verdict_share; bad triage files are one clear error (detect keeps the mutes it had)."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

import detect
import triage as triage_cli
from data import nbaiot
from data.csvfile import write_feature_csv
from data.loader import SIMULATED_ATTACKS_DIR, VERDICTS_DIR, load_device, read_feature_csv, split_device
from fediot.config import validate
from model.lean import LeanDetector
from tests.helpers import frame_batches
from tests.test_watch import lean_model
from traffic.alerts import AlertPublisher
from traffic.simulator import TrafficSimulator, device_ip
from traffic.triage import EVIDENCE_DIR, Evidence, Triage, TriageFollower

CAMERA = "Provision_PT_737E_Security_Camera"


class Collect:
    """A network sink that keeps what it is sent."""

    def __init__(self) -> None:
        self.sent: list = []
        self.lock = threading.Lock()

    def send(self, alert) -> None:
        with self.lock:
            self.sent.append(alert)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def camera_packets():
    return TrafficSimulator(CAMERA, seed=3).capture(180.0)


def run(tmp: Path, packets, triage_file: Path, out_name: str):
    """detect on the camera's packets with a model whose camera threshold every packet passes: every window alerts."""
    model = LeanDetector.load(lean_model(tmp / "model.npz", {"cam": 1e-12}))
    cfg = validate({}).detect
    sink = Collect()
    publisher = AlertPublisher([sink], cfg.alert_queue)
    tri = TriageFollower(triage_file, cfg.max_triage_entries, lambda text: None)
    evidence = Evidence(triage_file.parent / EVIDENCE_DIR, cfg.evidence_rows, nbaiot.CAPTURED_COLUMNS)
    out = tmp / out_name
    with out.open("w") as fh:
        summary = detect.run_detection(model, frame_batches(packets, 512), None, 5, fh,
                                       [detect.parse_watch(f"cam={device_ip(CAMERA)}")], cfg, publisher=publisher,
                                       triage=tri, evidence=evidence)
    publisher.close()
    return summary, [json.loads(x) for x in out.read_text().splitlines()], sink.sent


def test_episodes_kept_then_muted_then_benign_within_its_share(tmp_path, camera_packets, capsys):
    tfile = tmp_path / "local" / "triage.json"
    summary, lines, sent = run(tmp_path, camera_packets, tfile, "a.jsonl")
    assert summary["episodes"] and sent, "every window alerts: at least one episode, published"
    first = next(x for x in lines if "episode" in x)
    assert first["episode"] in summary["episodes"] and first["remote"] != device_ip(CAMERA) and first["why"]
    ev = tfile.parent / EVIDENCE_DIR / f"{first['episode']}.json"
    kept = json.loads(ev.read_text())
    assert kept["device"] == "cam" and 0 < kept["rows"] <= validate({}).detect.evidence_rows
    assert kept["remotes"] and kept["window_alerts"] >= kept["rows"]

    # mute the device: the same traffic again writes its alerts, marked, but publishes none of them
    assert triage_cli.main(["mute", "--device", "cam", "--hours", "6", "--triage", str(tfile)]) == 0
    summary2, lines2, sent2 = run(tmp_path, camera_packets, tfile, "b.jsonl")
    windows = [x for x in lines2 if x["window_alert"]]
    assert windows and all(x.get("muted") == "m1" for x in windows)
    assert not [a for a in sent2 if a.state == "ON"]
    assert summary2["devices"]["cam"]["muted_window_alerts"] == summary2["devices"]["cam"]["window_alerts"] > 0

    # a benign verdict: the episode's rows join the device's rows, cut to its share of the captured rows
    data = tmp_path / "data"
    (data / "cam").mkdir(parents=True)
    benign = np.abs(np.random.default_rng(0).normal(size=(10_000, nbaiot.N_CAPTURED_FEATURES)))
    write_feature_csv(str(data / "cam" / nbaiot.BENIGN_FILE), benign, nbaiot.CAPTURED_COLUMNS)
    (data / "cam" / "provenance.json").write_text(json.dumps({"device": "cam", "rows": 10_000, "captures": []}))
    # the device's simulated attacks hold rows like the episode's (as a flood called benign would be): refused,
    # nothing written; --force takes it
    episode_rows = read_feature_csv(tfile.parent / EVIDENCE_DIR / f"{first['episode']}.csv", nbaiot.CAPTURED_COLUMNS)
    (data / "cam" / SIMULATED_ATTACKS_DIR).mkdir()
    write_feature_csv(str(data / "cam" / SIMULATED_ATTACKS_DIR / "mirai_syn.csv"), episode_rows * 1.01,
                      nbaiot.CAPTURED_COLUMNS)
    capsys.readouterr()
    assert triage_cli.main(["benign", first["episode"], "--data", str(data), "--triage", str(tfile)]) == 2
    assert "look like mirai_syn" in capsys.readouterr().err and not (data / "cam" / VERDICTS_DIR).exists()
    assert triage_cli.main(["benign", first["episode"], "--data", str(data), "--triage", str(tfile),
                            "--reason", "camera update", "--force"]) == 0
    said = capsys.readouterr().out
    allowed = int(validate({}).detect.benign_verdict_share * 10_000)
    assert f"of {allowed:,} allowed" in said and "muted" in said
    verdict = data / "cam" / VERDICTS_DIR / f"{first['episode']}.csv"
    assert verdict.is_file()
    # cut to the share: rows evenly spaced over the whole episode, its last ones among them, not its first rows
    taken = read_feature_csv(verdict, nbaiot.CAPTURED_COLUMNS)
    spread = (np.arange(allowed) * len(episode_rows)) // allowed
    assert len(taken) == allowed < len(episode_rows) and np.array_equal(taken, episode_rows[spread])
    prov = json.loads((data / "cam" / "provenance.json").read_text())
    assert prov["benign_verdicts"][0]["episode"] == first["episode"] and prov["benign_verdicts"][0]["reason"]
    assert any(v["episode"] == first["episode"] for v in Triage.load(tfile, 100).verdicts)
    # the same episode twice, or a device whose share is used up: one clear error, nothing written
    assert triage_cli.main(["benign", first["episode"], "--data", str(data), "--triage", str(tfile)]) == 2
    assert "already given" in capsys.readouterr().err
    assert kept["rows"] > allowed and f"cut from {kept['rows']}" in said  # the strongest single click: cut to the share
    second = "cam-9999999999999"  # another episode of the device: its share is full, refused
    for ext in ("json", "csv"):
        text = (tfile.parent / EVIDENCE_DIR / f"{first['episode']}.{ext}").read_text()
        (tfile.parent / EVIDENCE_DIR / f"{second}.{ext}").write_text(text.replace(first["episode"], second))
    assert triage_cli.main(["benign", second, "--data", str(data), "--triage", str(tfile), "--force"]) == 2
    assert "benign_verdict_share" in capsys.readouterr().err
    assert not (data / "cam" / VERDICTS_DIR / f"{second}.csv").exists()

    # the loader: the verdict's rows are training rows (never validation or test), and rows someone adds beside them
    # past the share are not used
    write_feature_csv(str(data / "cam" / VERDICTS_DIR / "extra-0000000000000.csv"), benign[:5000],
                      nbaiot.CAPTURED_COLUMNS)
    dd = load_device(data, "cam", local=True, load_attacks=False,  # (its simulated attacks are not read here)
                     verdict_share=validate({}).detect.benign_verdict_share)
    assert dd.verdicts is not None and len(dd.verdicts) == allowed
    split = split_device(dd, 0.6, 0.2)
    assert len(split.train) == 6000 + allowed and len(split.validation) == 2000 and len(split.test) == 2000


def test_triage_files_that_are_not_are_one_clear_error(tmp_path, capsys):
    cfg = validate({}).detect
    bad = {"garbage": b"\xff\xfe{not json", "version": b'{"version": 9, "mutes": []}',
           "mute": b'{"version": 1, "mutes": [{"id": "m1", "remote": "not-an-ip"}]}',
           "nested": b'{"version": 1, "mutes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"}
    for name, content in bad.items():
        f = tmp_path / f"{name}.json"
        f.write_bytes(content)
        assert triage_cli.main(["list", "--triage", str(f)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(f"error: {f}") and err.count("\n") == 1 and "Traceback" not in err, (name, err)
    # detect follows the file: a broken edit keeps the mutes read before, and says so
    f = tmp_path / "triage.json"
    t = Triage()
    t.mute("cam", None, None, "")
    t.save(f)
    said: list[str] = []
    follower = TriageFollower(f, cfg.max_triage_entries, said.append)
    assert follower.poll().matching("cam", "1.2.3.4", 0.0) is not None
    f.write_text("{broken")
    assert follower.poll().matching("cam", "1.2.3.4", 0.0) is not None and "stay in force" in said[0]
    # a mute needs a device or a remote; episode ids are names, not paths
    assert triage_cli.main(["mute", "--triage", str(f)]) == 2
    assert triage_cli.main(["benign", "../../etc/passwd", "--triage", str(f)]) == 2
    assert "not an episode id" in capsys.readouterr().err


def test_attack_likeness_tells_an_attack_from_the_devices_own_rows():
    """The check behind refusing a verdict: rows drawn like an attack's are near it, rows drawn like the device's own
    benign rows (a later stretch of them) are not, nor rows unlike both."""
    from traffic.triage import attack_likeness

    rng = np.random.default_rng(0)
    benign = np.abs(rng.normal(1.0, 0.3, size=(3000, 20)))
    attack = np.abs(rng.normal(5.0, 0.3, size=(2000, 20)))
    assert attack_likeness(np.abs(rng.normal(5.0, 0.3, size=(200, 20))), benign, {"flood": attack})["flood"] > 0.9
    assert attack_likeness(np.abs(rng.normal(1.0, 0.3, size=(200, 20))), benign, {"flood": attack})["flood"] < 0.1
    # far from both, merely nearer to the attack than to the device (as the LAN test's firmware update was to
    # gafgyt_udp): "nearer" would call it the attack, twice as near (detect_args.verdict_attack_ratio) does not
    between = np.abs(rng.normal(2.86, 0.3, size=(200, 20)))  # log1p: 1.35, between the benign 0.69 and the attack 1.79
    assert attack_likeness(between, benign, {"flood": attack}, ratio=1.0)["flood"] > 0.9
    assert attack_likeness(between, benign, {"flood": attack}, ratio=validate({}).detect.verdict_attack_ratio)["flood"] < 0.1


def test_each_episode_keeps_its_packets_as_a_pcap(tmp_path, camera_packets):
    """Issue 36: an alert episode's evidence holds the packets behind its rows (read with their frames, as detect
    --triage reads them), as a pcap for a look in Wireshark: the same packets as the rows, within the episode's time."""
    from traffic.packets import read_capture
    from traffic.simulator import write_pcap

    pcap = write_pcap(tmp_path / "cam.pcap", camera_packets)
    model = LeanDetector.load(lean_model(tmp_path / "model.npz", {"cam": 1e-12}))
    cfg = validate({}).detect
    tfile = tmp_path / "local" / "triage.json"
    evidence = Evidence(tfile.parent / EVIDENCE_DIR, cfg.evidence_rows, nbaiot.CAPTURED_COLUMNS)
    with (tmp_path / "a.jsonl").open("w") as fh:
        summary = detect.run_detection(model, read_capture(pcap, 512, keep_frames=True), None, 5, fh,
                                       [detect.parse_watch(f"cam={device_ip(CAMERA)}")], cfg,
                                       triage=TriageFollower(tfile, cfg.max_triage_entries, lambda text: None),
                                       evidence=evidence)
    assert summary["episodes"]
    for episode in summary["episodes"]:
        kept = json.loads((tfile.parent / EVIDENCE_DIR / f"{episode}.json").read_text())
        packets = [p for batch, _ in read_capture(tfile.parent / EVIDENCE_DIR / f"{episode}.pcap") for p in
                   zip(batch.time, batch.src_ip, batch.dst_ip)]
        assert len(packets) == kept["packets"] == kept["rows"] > 0
        assert all(kept["first"] - 1e-6 <= t <= kept["last"] + 1e-6 for t, _, _ in packets)
        camera = __import__("ipaddress").ip_address(device_ip(CAMERA)).packed
        assert all(camera in (src, dst) for _, src, dst in packets)  # the watched device's own packets


def test_a_benign_verdict_teaches_the_next_model_the_whole_episode(tmp_path):
    """Issue 36, "this was me updating the camera": a firmware download the capture never showed alerts for all of its
    15 s. The verdict's rows are a sample of the whole episode (not its first seconds) and join the camera's
    training rows as the next federation's client loads and splits them (data.loader); the detector trained again on
    them no longer alerts on that update, nor on another update from another address."""
    import capture
    from model.detector import Detector
    from traffic.packets import read_capture
    from traffic.simulator import EPOCH, write_pcap

    ip, mac = "10.20.0.5", bytes.fromhex("3c71bf000005")
    cfg = validate({})

    def camera(seed: int) -> TrafficSimulator:
        sim = TrafficSimulator(CAMERA, seed, ip=ip, mac=mac)
        sim.kind = sim.kind.every_behaviour_within(20.0)  # 400 s hold every behaviour of its day (as the LAN test)
        return sim

    # 400 s: its verdicts may hold 2 % of its rows (detect_args.benign_verdict_share), 577: a whole episode's 500
    # rows. Camera seeds 0-3 left 4-45 of about 6,800 alerts; a 300 s capture (fewer rows allowed, fewer rows to
    # learn from) left the other update alerting on 16 % of its packets
    write_pcap(tmp_path / "cam.pcap", camera(0).capture(400.0))
    assert capture.main(["--pcap", str(tmp_path / "cam.pcap"), "--device", f"cam={ip}", "--out", str(tmp_path / "data"),
                         "--simulate-attacks", "inbound_syn,inbound_syn_trickle", "--attack-seconds", "5"]) == 0
    # the refusal's references: a slow inbound kind runs long enough for its rows, whatever --attack-seconds says
    prov = json.loads((tmp_path / "data" / "cam" / "provenance.json").read_text())["simulated_attacks"]
    assert prov["inbound_seconds"] == {"inbound_syn": 5.0, "inbound_syn_trickle": 300.0}
    assert prov["inbound_syn_trickle"] >= capture.INBOUND_MIN_ROWS
    start, update = EPOCH + 500.0, (30.0, 45.0)
    pcaps = []
    for seed in (1, 2):  # two updates, each within a minute of the camera's ordinary traffic
        sim = camera(seed)
        packets = sim.benign(start, start + 60.0) + sim.firmware_update(start + update[0], start + update[1])
        pcaps.append(write_pcap(tmp_path / f"update{seed}.pcap", sorted(packets, key=lambda p: p[0])))

    def trained(name: str) -> Path:
        dd = load_device(tmp_path / "data", "cam", local=True, load_attacks=False,
                         verdict_share=cfg.detect.benign_verdict_share)
        split = split_device(dd, cfg.data.train_fraction, cfg.data.validation_fraction)
        det, _ = Detector.fit({"cam": split.train}, {"cam": split.validation}, transform="log1p",
                              normalization="zscore", epochs=4, batch_size=cfg.train.batch_size,
                              lr=cfg.train.learning_rate, seed=0, k=cfg.validation.threshold_k)
        return det.export_lean(tmp_path / name)

    def update_alerts(model: Path, pcap: Path, tfile: Path) -> int:
        out = tmp_path / f"{model.stem}-{pcap.stem}.jsonl"
        assert detect.main([str(model), "--pcap", str(pcap), "--watch", f"cam={ip}", "--out", str(out),
                            "--triage", str(tfile)]) == 0
        lines = [json.loads(x) for x in out.read_text().splitlines() if not x.startswith('{"summary"')]
        return sum(1 for x in lines if x["window_alert"] and start + update[0] <= x["time"] <= start + update[1] + 5)

    before = trained("before.npz")
    tfile = tmp_path / "triage" / "triage.json"
    alerts_before = [update_alerts(before, pcaps[0], tfile),
                     update_alerts(before, pcaps[1], tmp_path / "t2" / "t.json")]
    update_packets = sum(1 for batch, _ in read_capture(pcaps[0]) for t in batch.time
                         if start + update[0] <= t <= start + update[1])
    assert min(alerts_before) > 0.5 * update_packets, (alerts_before, update_packets)
    kept = [json.loads(f.read_text()) for f in sorted((tfile.parent / EVIDENCE_DIR).glob("*.json"))]
    episode = next(e for e in kept if e["remotes"][0]["host"].startswith("23."))
    kept_pcap = tfile.parent / EVIDENCE_DIR / f"{episode['episode']}.pcap"
    times = [t for batch, _ in read_capture(kept_pcap) for t in batch.time]
    assert len(times) == cfg.detect.evidence_rows and max(times) > start + update[1] - 5  # the episode's end is in it
    assert triage_cli.main(["benign", episode["episode"], "--data", str(tmp_path / "data"), "--triage", str(tfile),
                            "--reason", "camera update"]) == 0

    after = trained("after.npz")
    alerts_after = [update_alerts(after, pcap, tmp_path / f"t{k}" / "t.json") for k, pcap in enumerate(pcaps, 3)]
    assert all(a <= 0.05 * b for a, b in zip(alerts_after, alerts_before)), (alerts_before, alerts_after)


def test_an_episodes_kept_rows_are_its_start_and_a_sample_of_all_the_rest(tmp_path):
    """Evidence keeps an episode's first max_rows // 2 rows and a uniform sample of the rest, in time order: what a
    verdict teaches is the whole episode, not its first seconds."""
    cols = nbaiot.CAPTURED_COLUMNS
    evidence = Evidence(tmp_path, 100, cols)
    evidence.start(0, "cam", 0.0, "why", None)
    for i in range(10_000):
        evidence.add(0, float(i), np.full(len(cols), float(i)), "203.0.113.5")
    kept = read_feature_csv(tmp_path / f"{evidence.end(0)}.csv", cols)[:, 0]
    assert len(kept) == 100 and list(kept[:50]) == list(range(50)) and np.all(np.diff(kept) > 0)
    counts = np.histogram(kept[50:], bins=4, range=(50, 10_000))[0]
    assert counts.sum() == 50 and counts.min() >= 5, counts  # each quarter of the rest is sampled (expected 12.5)
