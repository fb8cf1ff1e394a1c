"""Issue 23 end to end on a LAN of network namespaces: capture -> learn -> federate (gRPC + mutual TLS) -> watch ->
alert, on three boards whose simulated IoT devices talk on their own interfaces, attacked from another host.

Needs root (network namespaces, raw sockets) and mosquitto; skipped, saying why, only where namespaces are not
permitted. tools/lan.py builds the LAN (a bridge in its own namespace; traffic never leaves the namespaces)."""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "tools"))
import lan  # noqa: E402  (tools/lan.py)
from traffic.simulator import TrafficSimulator  # noqa: E402

PREFIX = f"fl{os.getpid() % 100}"
KINDS = ["Provision_PT_838_Security_Camera", "SimpleHome_XCS7_1002_WHT_Security_Camera", "Samsung_SNH_1011_N_Webcam"]
DEVICES = ["porch-cam", "garage-cam", "nursery-cam"]  # the user's own names
CAPTURE_S = 40.0  # seconds of benign traffic each board captures to learn from
# The simulated cameras poll their cloud every ~2 min and stream a motion event every ~2.5 min: a 40 s capture may hold
# neither, and detect then rightly flags the first event it sees (a CI run: 106 window alerts on an unattacked camera).
# Every behaviour (keep-alive, DNS, NTP, polls, events and their length) is capped at this many seconds, so that each
# chronological split of the capture (training, validation, test) holds every behaviour. bench/lan_capture_study.py,
# 5 seeds, this test's pipeline without the LAN: capped at 8 s, a validation split could miss the events (held-out FPR
# up to 0.20) and 3 of 5 seeds had a device with window alerts on more than 1 % of its later packets (up to 5 %; with
# only polls and events capped at 8 s, a CI run failed with 145); capped at 1 s, 1 device of 15 at 1.1 %, the rest
# <= 1 %.
# A real device needs a capture of hours (README "Your own devices").
BEHAVIOUR_EVERY_S = 1.0
# The emulated devices send at real-time priority (tools/lan.py replay --realtime): on this 2-core machine, beside the
# other test processes, a starved sender bunched its packets and an unattacked board raised 61 window alerts on them.
ALERT_WITHIN_S = 5.0  # the attacked device's board raises a window alert this soon after the attack's first packet
# At most this share of an unattacked device's packets raise window alerts before the attack, or HELD_OUT_FACTOR x the
# window false-alarm rate the federation itself measured for that device on its held-out captured rows (metrics.json),
# whichever is larger. This test is about the processes: capture, federation and detect on a LAN must agree, and a
# broken feature path or model hand-over alerts on nearly every packet (issue 36: 22,792 of 22,792). How many false
# alarms a 40 s capture of an emulated camera leaves is a detection-quality measurement, and its healthy spread
# reaches past any bound tight enough to mean more: 0-1.45 % per device in bench/bench_lan.py --busy 2, 3.0 % (65 of
# 2,191) on an idle clean clone's CI run, 2.4 % (59 of 2,440, a device whose held-out window FPR was 0) in a clean
# clone beside a benchmark, 0-1.7 % in bench/lan_capture_study.py (in process, seeds 0-4); a fixed 2 % failed CI
# twice. Finer breakages have their own tests (packet times: tests/test_detect.py's kernel-time test); real devices'
# false alerts per day are measured by bench/household.py (doc/benchmarks.md "Real devices").
FALSE_ALARM_RATE = 0.10
HELD_OUT_FACTOR = 3.0
# detect watches benign traffic this long before the attack (6 s left one board 263 packets; with 10 s the final model
# scored 2,332-4,164 packets per board, and a device whose bursts add up to 36 window alerts was at 1.45 % with the fewest)
BENIGN_WATCH_S = 15.0
MIN_WATCHED_PACKETS = 200  # each unattacked board scored at least this many of its device's packets
CLOCK_SLACK_S = 0.5  # packet times (the boards' capture) vs the attacker's clock: same machine, different processes
# Board 3's device goes silent (unplugged) after the attacks, then talks again from a new address (a new DHCP lease):
# board 3 watches it with this shortest silence that is an alert (detect_args.silence_min_s; the capture's longest
# silence times silence_factor when longer); a lagging reader on a loaded machine must not make a talking device
# look silent, hence seconds, not the 1 s its behaviours repeat at
SILENCE_MIN_S = 8.0
SILENT_WITHIN_S = 30.0  # the silent alert comes this soon after the device stops
MOVED_IP = f"{lan.SUBNET}.150"  # board 3's device's new address
EPISODE_WITHIN_S = 60.0  # board 1's flood episode is in its triage file within this long of the flood
TRIAGE_POLL_S = 1.5  # detect re-reads its triage file between live batches (at most timeout_s = 1 s apart)
MOVED_WATCH_S = 6.0  # detect watches the device at its new address this long
UPDATE_S = 8.0  # board 1's camera's firmware download (tools/lan.py update), during board 3's silence
MQTT_PORT = 1883
SYSLOG_PORT = 5514  # a syslog collector on the server host (UDP, RFC 5426)
RELAY_PORT = 8899


def namespaces_permitted() -> str | None:
    """None when this process may make network namespaces; else why not."""
    if os.geteuid() != 0:
        return "network namespaces and raw sockets need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = subprocess.run(["ip", "netns", "add", f"{PREFIX}-probe"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ip netns add is not permitted here: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", f"{PREFIX}-probe"], capture_output=True)
    return None


WHY_NOT = namespaces_permitted()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"namespaces not permitted: {WHY_NOT}")


def py(*args: str) -> list[str]:
    return [sys.executable, *args]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)})


def flood_from(atk, k: int, seconds: float) -> float:
    """The attacker host's SYN flood at board k's device (tools/lan.py flood); the time of its first packet."""
    done = subprocess.run(lan.in_ns(atk, *py(str(REPO / "tools" / "lan.py"), "flood", "--interface", atk.interface,
                                             "--src-ip", atk.ip, "--src-mac", atk.mac, "--target-ip", device_ip(k),
                                             "--target-mac", device_mac(k), "--seconds", str(seconds))),
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[0])["first_packet_at"]


def device_ip(k: int) -> str:
    return f"{lan.SUBNET}.{100 + k}"


def device_mac(k: int) -> str:
    return f"02:00:0a:e7:01:{k:02x}"


@pytest.fixture(scope="module")
def network():
    lan.down(PREFIX)
    hosts = lan.up(PREFIX, 3)
    yield {h.name.split("-")[-1]: h for h in hosts}
    lan.down(PREFIX)


def test_capture_learn_federate_watch_alert_on_a_lan_of_namespaces(network, tmp_path):
    from fediot.config import validate

    srv, atk = network["srv"], network["atk"]
    boards = [network[f"b{k}"] for k in (1, 2, 3)]
    procs: list[subprocess.Popen] = []
    try:
        # -- the server host: a real MQTT broker and a subscriber (what Home Assistant would be)
        from tests.test_watch import mosquitto
        (tmp_path / "mosquitto.conf").write_text(f"listener {MQTT_PORT} {srv.ip}\nallow_anonymous true\npersistence false\n")
        procs.append(start(lan.in_ns(srv, mosquitto(), "-c", str(tmp_path / "mosquitto.conf")), tmp_path / "mosquitto.log"))
        (tmp_path / "sub.py").write_text(SUBSCRIBER)
        time.sleep(1.0)
        procs.append(start(lan.in_ns(srv, *py(str(tmp_path / "sub.py"), srv.ip, str(MQTT_PORT), str(tmp_path / "mqtt.jsonl"))),
                           tmp_path / "sub.log"))
        (tmp_path / "syslogd.py").write_text(SYSLOG_COLLECTOR)  # and a syslog collector (what an SIEM would read)
        procs.append(start(lan.in_ns(srv, *py(str(tmp_path / "syslogd.py"), srv.ip, str(SYSLOG_PORT),
                                              str(tmp_path / "syslog.jsonl"))), tmp_path / "syslogd.log"))

        # -- each board's device talks (real time, on the board's interface); the board captures it
        replays = [start(lan.in_ns(b, *py(str(REPO / "tools" / "lan.py"), "replay", "--interface", b.interface,
                                           "--kind", KINDS[k], "--ip", device_ip(k + 1), "--mac", device_mac(k + 1),
                                           "--gateway-mac", f"02:00:0a:e7:02:{k + 1:02x}", "--seconds", "300",
                                           "--seed", str(k), "--behaviour-every", str(BEHAVIOUR_EVERY_S),
                                           "--realtime")),
                         tmp_path / f"replay{k + 1}.log")
                   for k, b in enumerate(boards)]
        procs += replays
        for k in range(3):  # each device talks before its board starts capturing (its frames take seconds to build)
            log = tmp_path / f"replay{k + 1}.log"
            deadline = time.monotonic() + 120
            while "first_packet_at" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
                time.sleep(0.2)
        captures = [start(lan.in_ns(b, *py("-m", "capture", "--interface", b.interface, "--duration", str(CAPTURE_S),
                                           "--device", f"{DEVICES[k]}={device_ip(k + 1)}", "--out", str(tmp_path / "local"),
                                           "--simulate-attacks", "mirai_syn,mirai_scan,gafgyt_udp,inbound_syn,inbound_syn_slow,inbound_syn_trickle",
                                           "--attack-seconds", "10")),
                         tmp_path / f"capture{k + 1}.log") for k, b in enumerate(boards)]
        for k, c in enumerate(captures):
            assert c.wait(CAPTURE_S + 120) == 0, (tmp_path / f"capture{k + 1}.log").read_text()[-2000:]

        # -- federated training over gRPC + mutual TLS on the namespaces' addresses
        certs = tmp_path / "certs"
        # rank 4: a certified board that lies (it names board 2's camera's own cloud server as an attacker)
        subprocess.run(["bash", str(REPO / "make_certs.sh"), str(certs), "4", srv.ip], check=True, capture_output=True)
        ipconfig = tmp_path / "ipconfig.csv"
        ipconfig.write_text("eid,rank,grpc_server_ip,grpc_server_port,ingress_ip\n" + f"0,0,{srv.ip},50051,\n"
                            + "".join(f"{k},{k},{b.ip},{50051 + k},\n" for k, b in enumerate(boards, 1)))
        values = {
            "common_args": {"training_type": "cross_silo", "random_seed": 0, "run_dir_root": str(tmp_path / "server")},
            "data_args": {"dataset": "local", "devices": DEVICES, "local_data_dir": str(tmp_path / "local"),
                          "attack_test_rows": 500},
            "train_args": {"comm_round": 3, "epochs": 5, "round_timeout_s": 60},
            "validation_args": {"frequency_of_the_test": 1},
            "comm_args": {"backend": "GRPC", "grpc_ipconfig_path": str(ipconfig), "tls_dir": str(certs),
                          "connect_timeout_s": 60, "wait_for_clients_s": 120, "retry_interval_s": 0.5},
            # early warning between the boards of this LAN (issue 37): its attacker has a private address
            "detect_args": {"mqtt_broker": f"{srv.ip}:{MQTT_PORT}", "syslog": f"udp://{srv.ip}:{SYSLOG_PORT}",
                            "alert_interval_s": 5, "warn_share_private": True,
                            "warn_relay_port": RELAY_PORT},
        }
        validate(values)
        cfg = tmp_path / "server.yaml"
        cfg.write_text(yaml.safe_dump(values))
        board_cfg = []
        for k in (1, 2, 3):  # each board keeps its runs in its own directory
            board_cfg.append(tmp_path / f"board{k}.yaml")
            detect_args = {**values["detect_args"], **({"silence_min_s": SILENCE_MIN_S} if k == 3 else {})}
            board_cfg[-1].write_text(yaml.safe_dump({**values, "common_args": {**values["common_args"],
                                                                               "run_dir_root": str(tmp_path / f"board{k}")},
                                                     "detect_args": detect_args}))
        server = start(lan.in_ns(srv, "bash", str(REPO / "run_server.sh"), str(cfg)), tmp_path / "server.log")
        procs.append(server)
        procs.append(start(lan.in_ns(srv, *py("-m", "relay", "--tls-dir", str(certs), "--host", srv.ip, "--config",
                                              str(cfg))), tmp_path / "relay.log"))
        clients = [start(lan.in_ns(b, "bash", str(REPO / "run_client.sh"), str(k), str(board_cfg[k - 1])),
                         tmp_path / f"client{k}.log") for k, b in enumerate(boards, 1)]
        procs += clients
        # -- each board watches its device with the federation's newest model (waits for the first evaluation)
        detects = [start(lan.in_ns(b, *py("-m", "detect", "--follow", str(tmp_path / f"board{k}"), "--interface", b.interface,
                                          # by MAC, as README's household watch: its IPs are learnt from its packets
                                          "--watch", f"{DEVICES[k - 1]}={device_mac(k)}",
                                          "--profiles", str(tmp_path / "local"),
                                          "--config", str(board_cfg[k - 1]),
                                          "--board", f"board{k}", "--out", str(tmp_path / f"alerts{k}.jsonl"),
                                          # each board's triage file: mutes it follows, its alert episodes' evidence
                                          "--triage", str(tmp_path / f"triage{k}" / "triage.json"),
                                          "--relay", f"{srv.ip}:{RELAY_PORT}", "--tls-dir", str(certs), "--rank",
                                          str(k), "--duration", "300")), tmp_path / f"detect{k}.log")
                   for k, b in enumerate(boards, 1)]
        procs += detects
        assert server.wait(300) == 0, (tmp_path / "server.log").read_text()[-3000:]
        for k, c in enumerate(clients, 1):
            assert c.wait(60) == 0, (tmp_path / f"client{k}.log").read_text()[-2000:]

        # -- a lying board names board 2's camera's cloud server and 20 more addresses through the relay (issue 37)
        cloud = str(ipaddress.ip_address(TrafficSimulator(
            KINDS[1], 1, ip=device_ip(2), mac=bytes.fromhex(device_mac(2).replace(":", "")),
            gateway_mac=bytes.fromhex("02000ae70202")).cloud))
        liar = subprocess.run(lan.in_ns(atk, *py("-c", LIAR, f"{srv.ip}:{RELAY_PORT}", str(certs), cloud)),
                              capture_output=True, text=True, timeout=60, cwd=REPO)
        assert liar.returncode == 0, liar.stderr
        # -- benign watching (a few hundred packets per device), then an attacker floods board 1's device
        time.sleep(BENIGN_WATCH_S)
        attack_at = flood_from(atk, 1, 6)
        time.sleep(4.0)
        # -- the same attacker then at board 2's device: board 1's indicator is there before it (issue 37)
        attack2_at = flood_from(atk, 2, 2)
        time.sleep(3.0)
        # -- triage (issue 36): board 2's user mutes the attacker at that device; the next flood there is still in its
        # alert lines, marked muted, and no longer on MQTT (nor syslog: the same publisher)
        mute = subprocess.run(py("-m", "triage", "mute", "--device", DEVICES[1], "--remote", atk.ip, "--hours", "1",
                                 "--reason", "seen, being handled", "--triage", str(tmp_path / "triage2" / "triage.json")),
                              capture_output=True, text=True, timeout=60, cwd=REPO)
        assert mute.returncode == 0, mute.stderr
        time.sleep(TRIAGE_POLL_S)
        attack3_at = flood_from(atk, 2, 2)
        # -- board 1's user says "this was benign" of the flood's alert episode (issue 36): one click must not teach the
        # model the attack. Its rows are like the camera's simulated inbound_syn (capture simulates a LAN host's telnet
        # SYNs at 200 packets/s; this flood is 1,500/s): refused, nothing written
        triage1 = str(tmp_path / "triage1" / "triage.json")
        # board 1's detect writes the flood's episode once it has read the flood's packets: on a loaded machine it
        # reads seconds behind real time (a clean-clone CI, 2026-12-08: not yet listed 11 s after the flood)
        deadline = time.monotonic() + EPISODE_WITHIN_S
        while True:
            listed = subprocess.run(py("-m", "triage", "list", "--triage", triage1), capture_output=True, text=True,
                                    timeout=60, cwd=REPO)
            assert listed.returncode == 0, listed.stderr
            flood_episodes = [line.split()[0] for line in listed.stdout.splitlines()
                              if line.startswith(DEVICES[0] + "-") and atk.ip in line]
            if flood_episodes or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        assert flood_episodes, listed.stdout

        def verdict(episode: str) -> subprocess.CompletedProcess:
            return subprocess.run(py("-m", "triage", "benign", episode, "--data", str(tmp_path / "local"), "--config",
                                     str(board_cfg[0]), "--triage", triage1),
                                  capture_output=True, text=True, timeout=60, cwd=REPO)

        refused = verdict(flood_episodes[0])
        assert refused.returncode != 0 and "look like inbound_syn" in refused.stderr, (refused.stdout, refused.stderr)
        assert not (tmp_path / "local" / DEVICES[0] / "benign_verdicts").exists()
        # -- then board 1's camera updates its firmware (a download from an address its capture never showed), while
        # board 3's camera goes silent below: an episode its user rightly calls benign (after the watch)
        update = start(lan.in_ns(boards[0], *py(str(REPO / "tools" / "lan.py"), "update", "--interface",
                                                boards[0].interface, "--kind", KINDS[0], "--ip", device_ip(1), "--mac",
                                                device_mac(1), "--gateway-mac", "02:00:0a:e7:02:01", "--seconds",
                                                str(UPDATE_S))), tmp_path / "update1.log")
        procs.append(update)
        time.sleep(3.0)
        # -- board 3's device goes silent (unplugged), then comes back with a new address (issue 36): the silence is an
        # alert of its own, and the device, watched by its MAC, is watched at its new address too
        silenced_at = time.time()
        replays[2].terminate()
        replays[2].wait(10)
        deadline = time.monotonic() + SILENT_WITHIN_S
        while time.monotonic() < deadline and '\\"host\\": \\"silent\\"' not in (tmp_path / "mqtt.jsonl").read_text():
            time.sleep(0.5)  # the MQTT subscriber writes each message at once (detect's JSON lines are buffered)
        log = tmp_path / "replay3-moved.log"
        procs.append(start(lan.in_ns(boards[2], *py(str(REPO / "tools" / "lan.py"), "replay", "--interface",
                                                    boards[2].interface, "--kind", KINDS[2], "--ip", MOVED_IP,
                                                    "--mac", device_mac(3), "--gateway-mac", "02:00:0a:e7:02:03",
                                                    "--seconds", "60", "--seed", "5", "--behaviour-every",
                                                    str(BEHAVIOUR_EVERY_S), "--realtime")), log))
        deadline = time.monotonic() + 120
        while "first_packet_at" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(MOVED_WATCH_S)
        for d in detects:
            d.terminate()
        summaries = []
        for k, d in enumerate(detects, 1):
            d.wait(30)
            log = (tmp_path / f"detect{k}.log").read_text()
            summaries.append(json.loads(next(line for line in reversed(log.splitlines()) if line.startswith("{\"summary\""))))
        # -- the update's episode (written when detect stopped, if not before): taken, bounded, recorded, and in the rows
        # board 1's next federation loads (data.loader: training rows; tests/test_triage.py: a model trained again on
        # them no longer alerts on the update)
        assert update.wait(30) == 0, (tmp_path / "update1.log").read_text()
        listed = subprocess.run(py("-m", "triage", "list", "--triage", triage1), capture_output=True, text=True,
                                timeout=60, cwd=REPO)
        updates = [line.split()[0] for line in listed.stdout.splitlines()
                   if line.startswith(DEVICES[0] + "-") and "remote: 23." in line]
        assert updates, listed.stdout
        taken = verdict(updates[0])
        assert taken.returncode == 0, (taken.stdout, taken.stderr)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    server_run = Path((tmp_path / "server.log").read_text().strip().splitlines()[-1])
    metrics = json.loads((server_run / "metrics.json").read_text())
    assert sorted(metrics["devices"]) == sorted(DEVICES) and "SIMULATED" in metrics["data"]["attacks"]
    # each board learnt from its own captured rows, captured on its own interface
    for k, b in enumerate(boards, 1):
        prov = json.loads((tmp_path / "local" / DEVICES[k - 1] / "provenance.json").read_text())
        assert prov["captures"][0]["source"] == f"interface {b.interface}" and prov["rows"] > 300
        board_run = Path((tmp_path / f"client{k}.log").read_text().strip().splitlines()[-1])
        trained = [json.loads(x) for x in (board_run / f"{DEVICES[k - 1]}.jsonl").read_text().splitlines()]
        assert trained and all(t["samples"] == int(prov["rows"] * 0.6) for t in trained)
        assert len(summaries[k - 1]["model_swaps"]) >= 1  # it followed the federation
    # the benign verdict: its rows within one click's bound, in board 1's provenance and in the rows its next
    # federation trains on (the loader, as its client loads them)
    from data.loader import load_device

    limits = validate(values).detect
    prov1 = json.loads((tmp_path / "local" / DEVICES[0] / "provenance.json").read_text())
    rows = sum(v["rows"] for v in prov1.get("benign_verdicts", []))
    assert [v["episode"] for v in prov1["benign_verdicts"]] == updates[:1], prov1["benign_verdicts"]
    assert 0 < rows <= min(limits.evidence_rows, limits.benign_verdict_share * prov1["rows"]), (rows, prov1["rows"])
    loaded = load_device(tmp_path / "local", DEVICES[0], local=True, load_attacks=False,
                         verdict_share=limits.benign_verdict_share)
    assert loaded.verdicts is not None and len(loaded.verdicts) == rows
    # the attacked device's board alerts on the attacker within ALERT_WITHIN_S of its first packet
    alerts1 = [json.loads(x) for x in (tmp_path / "alerts1.jsonl").read_text().splitlines()]
    first = min((a["time"] for a in alerts1 if a["window_alert"] and a["host"] == atk.ip), default=None)
    assert first is not None and 0.0 <= first - attack_at + CLOCK_SLACK_S and first - attack_at <= ALERT_WITHIN_S, \
        (first, attack_at)
    # the first window alert about the attacker explains itself (issue 36), also when the camera's own false alarm had
    # already started an alert episode: the feature groups that deviate most, in a household's words (its line is the
    # attacker's packet or the camera's answer to it: either names the attacker as the remote endpoint)
    on_attacker = next((a for a in alerts1 if a["window_alert"] and a.get("remote") == atk.ip and a.get("why")), None)
    assert on_attacker and on_attacker["time"] <= first, (on_attacker, first)
    # board 2 alerted on the attacker at its first packet there, warned by board 1 through the relay (issue 37)
    alerts2 = [json.loads(x) for x in (tmp_path / "alerts2.jsonl").read_text().splitlines()]
    early2 = [a for a in alerts2 if a.get("early_warning") and a["host"] == atk.ip and not a.get("cleared")]
    assert early2 and early2[0]["from_board"] == "board1", (early2, (tmp_path / "relay.log").read_text()[-2000:])
    own2 = min((a["time"] for a in alerts2 if a["window_alert"] and a["host"] == atk.ip), default=None)
    assert abs(early2[0]["time"] - attack2_at) <= CLOCK_SLACK_S and (own2 is None or early2[0]["time"] <= own2)
    # its own detector (the README's household watch: --profiles) alerts on the attacker too, and that alert confirms
    # the warning (without --profiles, board 2's autoencoder alone missed this flood at its camera in most runs)
    assert own2 is not None and any(a.get("early_warning_confirmed") == "board1" for a in alerts2), own2
    # the liar: what board 2 was told of its own cloud server is at most one warning (at its first packet there), and
    # never confirmed: the liar is one board, and a passing false alarm of an honest board on the same address (a CI
    # run: board 2's model flagged its cloud itself) does not make that board sure of it (detect_args
    # .warn_confirm_windows / warn_confirm_share). The liar's 20 other addresses: board 2 never talks to them
    told = [a for a in alerts2 if a.get("early_warning") and not a.get("cleared") and a["host"] == cloud]
    assert len(told) <= 1 and all(a["status"] == "warning" for a in told), told
    told_any = [a for k in (1, 2, 3) for a in map(json.loads, (tmp_path / f"alerts{k}.jsonl").read_text().splitlines())
                if a.get("early_warning") and a["host"] == cloud and not a.get("cleared")]
    assert all(a["status"] == "warning" for a in told_any), told_any  # at no board
    assert not any(a.get("early_warning") and a.get("from_board") == "board4" and a["host"] != cloud for a in alerts2)
    # the other devices' false alarms before the attack (the attacked device's own packets answer the flood: not
    # counted there). Those during the flood are counted apart (bench/bench_lan.py): before the senders ran at
    # real-time priority and packets carried the kernel's receive time, this 2-core machine's load during the flood
    # changed their timing (one unattacked board: 37 window alerts within those 2 s); 0-9 in the last bench runs.
    # Counted for the federation's final model: the packets detect scored with it (its model_swaps record how many the
    # earlier ones scored) and the alerts at its threshold. Earlier rounds' models are less trained and, on a loaded
    # machine where rounds take longer, detect scores more packets with them (a CI run beside a benchmark: 81 window
    # alerts in 2,696 packets, models of rounds 1-3 together).
    during: dict[str, int] = {}
    final_model: dict[str, dict[str, int]] = {}
    for k in (2, 3):
        device = DEVICES[k - 1]
        final = summaries[k - 1]["model_swaps"][-1]
        packets = summaries[k - 1]["devices"][device]["packets"] - final["packets_before"][device]
        alerts = [a for a in map(json.loads, (tmp_path / f"alerts{k}.jsonl").read_text().splitlines())
                  if a["threshold"] == final["thresholds"][device]]
        before = sum(a["window_alert"] and a["time"] < attack_at - CLOCK_SLACK_S for a in alerts)
        during[device] = sum(a["window_alert"] for a in alerts) - before
        final_model[device] = {"packets": packets, "window_alerts_before_attack": before}
        held_out = metrics["devices"][device]["window"]["fpr"]
        bound = max(FALSE_ALARM_RATE, HELD_OUT_FACTOR * held_out)
        assert final["round"] == 3 and packets > MIN_WATCHED_PACKETS and before <= bound * packets, \
            (before, packets, bound, held_out, summaries[k - 1]["devices"][device], summaries[k - 1]["model_swaps"])
    # the muted attacker (issue 36): board 2 still alerted on the third flood, every such line marked muted, and none of
    # them reached MQTT
    muted = [a for a in alerts2 if a["window_alert"] and a["host"] == atk.ip and a["time"] >= attack3_at - CLOCK_SLACK_S]
    assert muted and all("muted" in a for a in muted), muted[:3]
    # board 3's device: silent once it stopped (not before), and watched by its MAC at its new address (issue 36)
    silent3 = silent_alerts(tmp_path / "alerts3.jsonl", DEVICES[2])
    assert silent3 and silenced_at < silent3[0]["time"] <= silenced_at + SILENT_WITHIN_S, (silent3[:2], silenced_at)
    assert MOVED_IP in summaries[2].get("learnt_ips", {}).get(DEVICES[2], []), summaries[2].get("learnt_ips")
    # the MQTT alert reached a subscriber on the server's broker (Home Assistant's discovery topics too)
    got = [json.loads(x) for x in (tmp_path / "mqtt.jsonl").read_text().splitlines()]
    assert any(m["topic"] == f"fediot/board3/{DEVICES[2]}/alert" and json.loads(m["payload"])["host"] == "silent"
               for m in got)
    assert not [m for m in got if m["topic"] == f"fediot/board2/{DEVICES[1]}/alert" and m["received_at"] >= attack3_at
                and json.loads(m["payload"])["host"] == atk.ip], "a muted alert reached MQTT"
    topics = {m["topic"] for m in got}
    assert f"homeassistant/binary_sensor/fediot_board1_{DEVICES[0]}/config" in topics
    assert any(m["topic"] == f"fediot/board1/{DEVICES[0]}/state" and m["payload"] == "ON" for m in got)
    # the alert about the attacker (its state may already be ON from a benign false alarm: a state changes only once)
    about_attacker = [m for m in got if m["topic"] == f"fediot/board1/{DEVICES[0]}/alert"
                      and json.loads(m["payload"])["host"] == atk.ip]
    assert about_attacker and -CLOCK_SLACK_S <= about_attacker[0]["received_at"] - attack_at <= ALERT_WITHIN_S + 2.0, \
        (about_attacker[:1], attack_at)
    assert any(on_attacker["why"][0]["meaning"] in json.loads(m["payload"]).get("why", "") for m in got
               if m["topic"] == f"fediot/board1/{DEVICES[0]}/alert" and m["received_at"] >= attack_at - CLOCK_SLACK_S
               and json.loads(m["payload"])["host"] == on_attacker["host"])  # its MQTT message says why too
    warned2 = [m for m in got if m["topic"] == f"fediot/board2/{DEVICES[1]}/alert"
               and json.loads(m["payload"])["host"] == atk.ip and "early warning" in m["payload"]]
    assert warned2 and -CLOCK_SLACK_S <= warned2[0]["received_at"] - attack2_at <= ALERT_WITHIN_S, warned2[:1]
    # and on syslog (RFC 5424 over UDP to the collector on the server host): board 2's early warning too
    logged = [json.loads(x) for x in (tmp_path / "syslog.jsonl").read_text().splitlines()]
    syslog2 = [m for m in logged if " board2 " in m["message"] and f'host="{atk.ip}"' in m["message"]
               and "early warning" in m["message"]]
    assert syslog2 and -CLOCK_SLACK_S <= syslog2[0]["received_at"] - attack2_at <= ALERT_WITHIN_S, (syslog2[:1], logged[:3])
    record = os.environ.get("FEDIOT_LAN_RECORD")  # bench/bench_lan.py: what this run measured
    if record:
        Path(record).write_text(json.dumps({
            "alert_latency_s": first - attack_at, "mqtt_latency_s": about_attacker[0]["received_at"] - attack_at,
            "early_warning_at_board2_s": early2[0]["time"] - attack2_at,
            "board2_own_alert_after_s": None if own2 is None else own2 - attack2_at,
            "early_warning_mqtt_latency_s": warned2[0]["received_at"] - attack2_at,
            "early_warning_syslog_latency_s": syslog2[0]["received_at"] - attack2_at,
            "silent_alert_after_s": silent3[0]["time"] - silenced_at,
            "attacker_alert_why": on_attacker["why"],
            "captured_rows": {d: json.loads((tmp_path / "local" / d / "provenance.json").read_text())["rows"]
                              for d in DEVICES},
            "false_alarms": {DEVICES[k - 1]: summaries[k - 1]["devices"][DEVICES[k - 1]] for k in (2, 3)},
            "final_model_false_alarms": final_model,
            "attacked": summaries[0]["devices"][DEVICES[0]], "model_swaps": [len(s["model_swaps"]) for s in summaries],
            "unattacked_window_alerts_during_attack": during,
            "attacked_board_window_alerts_before_attack": sum(a["window_alert"] and a["time"] < attack_at - CLOCK_SLACK_S
                                                              for a in alerts1),
            "detect_peak_rss_mb": [s["memory"]["peak_rss_mb"] for s in summaries],
            "metrics": {"tpr": metrics["global"]["tpr"], "fpr": metrics["global"]["fpr"]}}, indent=1))


LIAR = """
import json, sys, time
from pathlib import Path
from relay import RelayLink
from traffic.warning import Indicator, IndicatorStore
link = RelayLink(sys.argv[1], Path(sys.argv[2]), 4, IndicatorStore(10, 60)).start()
assert link.connected.wait(30), "the liar could not reach the relay"
for ip in [sys.argv[3]] + [f"203.0.113.{i}" for i in range(1, 21)]:
    link.publish(Indicator(ip, (443,), "other", time.time(), 9.9, ("HH",)))
time.sleep(2)
print(json.dumps(link.counts))
"""


SYSLOG_COLLECTOR = '''
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
out = open(sys.argv[3], "a", buffering=1)
while True:
    data = s.recv(65535)
    out.write(json.dumps({"message": data.decode("utf-8", "replace"), "received_at": time.time()}) + "\\n")
'''


SUBSCRIBER = '''
import json, sys, time
import paho.mqtt.client as mqtt
host, port, out = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], "a", buffering=1)
kw = {"callback_api_version": mqtt.CallbackAPIVersion.VERSION2} if hasattr(mqtt, "CallbackAPIVersion") else {}
c = mqtt.Client(client_id="home-assistant-stand-in", **kw)
c.on_message = lambda cl, u, m: out.write(json.dumps({"topic": m.topic, "payload": m.payload.decode(),
                                                      "received_at": time.time()}) + "\\n")
for _ in range(100):
    try:
        c.connect(host, port)
        break
    except OSError:
        time.sleep(0.2)
c.subscribe([("homeassistant/#", 1), ("fediot/#", 1)])
c.loop_forever()
'''


def silent_alerts(path: Path, device: str) -> list[dict]:
    """detect's silent-device lines for `device` so far."""
    if not path.exists():
        return []
    lines = [json.loads(x) for x in path.read_text().splitlines() if '"silent": true' in x]
    return [a for a in lines if a["device"] == device]


def test_a_simulation_across_two_hosts_of_the_lan(network, tmp_path):
    """run_simulation.sh --hostfile with two board hosts: Open MPI launches its daemons through tools/netns_rsh
    (an ssh stand-in that enters a namespace, each with its own host name) and the ranks talk MPI over TCP across
    the bridge. The run equals the same config run in process."""
    from tests.rounds import assert_same_metrics, metrics_of, run, sim_values

    b1, b2 = network["b1"], network["b2"]
    hostfile = tmp_path / "hosts"
    hostfile.write_text(f"# two hosts of the LAN\n{b1.ip} slots=2\n{b2.ip} slots=2\n")
    values = sim_values(tmp_path)
    cfg = tmp_path / "sim.yaml"
    cfg.write_text(yaml.safe_dump(values))
    env = {**os.environ, "PYTHON": sys.executable, "PRTE_MCA_plm_ssh_agent": str(REPO / "tools" / "netns_rsh"),
           "PRTE_MCA_oob_tcp_if_include": f"{lan.SUBNET}.0/24", "OMPI_MCA_btl_tcp_if_include": f"{lan.SUBNET}.0/24"}
    proc = subprocess.run(lan.in_ns(network["srv"], "sh", str(REPO / "run_simulation.sh"), "3", str(cfg),
                                    "--hostfile", str(hostfile)), capture_output=True, text=True, timeout=300, env=env,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    hosts = {json.loads(p.read_text())["host"] for p in (run_dir / "resources").glob("rank*.json")}
    assert hosts == {b1.name, b2.name}  # ranks ran on both hosts
    values["common_args"]["run_dir_root"] = str(tmp_path / "in-process")
    _, _, in_process = run(values)
    assert_same_metrics(metrics_of(run_dir), metrics_of(in_process))
