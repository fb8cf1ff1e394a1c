"""Packets -> features -> detector: the detect command on a simulated capture with an attack in the middle."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO
from traffic.packets import read_capture
from traffic.simulator import EPOCH, TrafficSimulator, write_pcap

DEVICE = "Provision_PT_737E_Security_Camera"
ATTACK_START, ATTACK_END, DURATION = 1200.0, 1260.0, 2400.0


@pytest.fixture(scope="module")
def model_and_pcap(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("detect")
    proc = subprocess.run([sys.executable, "-m", "traffic.train_device", DEVICE, "--out", str(tmp / "model.pt"),
                           "--seconds", "1800", "--epochs", "10", "--seed", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "held-out benign FPR" in proc.stdout
    packets = TrafficSimulator(DEVICE, seed=7).capture(DURATION, "mirai_ack", ATTACK_START, ATTACK_END - ATTACK_START)
    write_pcap(tmp / "capture.pcap", packets)
    return tmp, np.array([t for t, _ in packets]) - EPOCH


def test_alerts_inside_attack_and_almost_none_outside(model_and_pcap):
    tmp, rel = model_and_pcap
    out = tmp / "alerts.jsonl"
    proc = subprocess.run([sys.executable, "-m", "detect", str(tmp / "model.pt"), "--pcap", str(tmp / "capture.pcap"),
                           "--device", DEVICE, "--window", "5", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["packets"] == len(rel) and summary["packets_per_s"] > 0
    alerts = [json.loads(line) for line in out.read_text().splitlines()]
    assert set(alerts[0]) == {"time", "host", "device", "score", "threshold", "packet_alert", "window_alert"}
    t = np.array([a["time"] for a in alerts if a["window_alert"]]) - EPOCH
    inside = (rel >= ATTACK_START) & (rel < ATTACK_END)
    alerted_inside = ((t >= ATTACK_START) & (t < ATTACK_END)).sum()
    alerted_outside = len(t) - alerted_inside
    assert alerted_inside / inside.sum() >= 0.95
    assert alerted_outside / (~inside).sum() <= 0.02
    before = (t < ATTACK_START).sum() / (rel < ATTACK_START).sum()
    assert before <= 0.01


def test_reader_skips_non_ip_truncated_and_rejects_non_captures(tmp_path):
    import dpkt
    sim_packets = TrafficSimulator("Ennio_Doorbell", seed=3).capture(120)
    arp = bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\xff" * 6, type=dpkt.ethernet.ETH_TYPE_ARP,
                                       data=b"\x00" * 28))
    frames = sim_packets[:10] + [(sim_packets[10][0], arp), (sim_packets[11][0], sim_packets[11][1][:30])] + sim_packets[12:]
    write_pcap(tmp_path / "mixed.pcap", frames)
    total, skipped = 0, None
    for batch, skipped in read_capture(tmp_path / "mixed.pcap"):
        total += len(batch)
    assert total == len(frames) - 2
    assert skipped.non_ip == 1 and skipped.truncated == 1
    (tmp_path / "junk.pcap").write_bytes(b"this is not a capture at all")
    proc = subprocess.run([sys.executable, "-m", "detect", str(tmp_path), "--pcap", str(tmp_path / "junk.pcap")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr


def test_fast_ipv4_path_matches_dpkt():
    import dpkt

    from traffic.packets import PacketBatch, SkipCounts, parse_frame
    frames = TrafficSimulator("Samsung_SNH_1011_N_Webcam", seed=2).capture(60, "gafgyt_combo", 10, 5)
    batch, skipped = PacketBatch(), SkipCounts()
    for t, f in frames:
        parse_frame(t, f, len(f), batch, skipped)
    for n, (t, f) in enumerate(frames):
        eth = dpkt.ethernet.Ethernet(f)
        assert (batch.src_mac[n], batch.src_ip[n], batch.dst_ip[n]) == (bytes(eth.src), bytes(eth.data.src), bytes(eth.data.dst))
        assert (batch.src_port[n], batch.dst_port[n]) == (eth.data.data.sport, eth.data.data.dport)
        assert batch.size[n] == len(f)


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() != 0,
                    reason="live capture needs root (AF_PACKET)")
def test_live_capture_on_loopback(model_and_pcap, tmp_path):
    """detect.py --interface lo sees packets we send over 127.0.0.1 while it captures."""
    import socket
    import time

    tmp, _ = model_and_pcap
    proc = subprocess.Popen([sys.executable, "-m", "detect", str(tmp / "model.pt"), "--interface", "lo",
                             "--duration", "6", "--out", str(tmp_path / "live.jsonl")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "capturing on lo" in proc.stderr.readline()  # the socket is open
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(200):
        s.sendto(b"x" * 100, ("127.0.0.1", 9))
        time.sleep(0.005)
    s.close()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["packets"] >= 200


@pytest.mark.parametrize("fmt", ["pcap_us_le", "pcap_ns_le", "pcap_us_be", "pcapng"])
def test_every_capture_format_reads_the_same_packets_as_dpkt(tmp_path, fmt):
    """Our classic-pcap reader (struct, big reads) against dpkt's readers, on the same frames."""
    import struct

    import dpkt

    from traffic.packets import PacketBatch, SkipCounts, parse_frame
    frames = TrafficSimulator("Ennio_Doorbell", seed=8).capture(90, "gafgyt_tcp", 30, 5)
    path = tmp_path / "cap"
    with open(path, "wb") as fh:
        if fmt == "pcapng":
            writer = dpkt.pcapng.Writer(fh, linktype=dpkt.pcap.DLT_EN10MB)
        else:
            writer = dpkt.pcap.Writer(fh, linktype=dpkt.pcap.DLT_EN10MB, nano=fmt == "pcap_ns_le")
        for t, frame in frames:
            writer.writepkt(frame, ts=t)
    if fmt == "pcap_us_be":   # rewrite every header field big-endian
        data, out, pos = path.read_bytes(), bytearray(), 24
        out += struct.pack(">IHHiIII", *struct.unpack_from("<IHHiIII", data, 0))
        while pos < len(data):
            sec, usec, caplen, length = struct.unpack_from("<IIII", data, pos)
            out += struct.pack(">IIII", sec, usec, caplen, length) + data[pos + 16:pos + 16 + caplen]
            pos += 16 + caplen
        path.write_bytes(bytes(out))
    expected, skipped = PacketBatch(), SkipCounts()
    with open(path, "rb") as fh:
        reader = dpkt.pcapng.Reader(fh) if fmt == "pcapng" else dpkt.pcap.Reader(fh)
        for ts, buf in reader:
            parse_frame(float(ts), buf, len(buf), expected, skipped)
    got = [b for b, _ in read_capture(path, batch_size=1000)]
    assert len(expected) == len(frames)
    for name in ("time", "size", "src_mac", "src_ip", "dst_ip", "src_port", "dst_port"):
        assert [v for b in got for v in getattr(b, name)] == getattr(expected, name), name


@pytest.mark.skipif(os.geteuid() != 0, reason="a live capture needs root (AF_PACKET)")
def test_a_live_packet_of_an_indicated_endpoint_ends_its_batch_at_once():
    """Issue 37's latency: the first packet from or to an endpoint another board indicated is handed on at once, not
    after detect_args.live_max_wait_ms (here 2 s, so that waiting would show)."""
    import ipaddress
    import socket
    import time

    from traffic.packets import live_capture

    indicated = ipaddress.ip_address("127.0.0.2").packed
    batches = live_capture("lo", batch_packets=64, timeout_s=5.0, duration_s=4.0, max_wait_s=2.0,
                           urgent=lambda address: address == indicated)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(3):
        s.sendto(b"fediot-before", ("127.0.0.1", 9))
    sent = time.time()
    s.sendto(b"fediot-indicated", ("127.0.0.2", 9))
    handed: list[tuple[float, list[bytes]]] = []
    for batch, _ in batches:
        handed.append((time.time(), list(batch.dst_ip)))
        if any(d == indicated for d in batch.dst_ip):
            break
    s.close()
    at, dst = handed[-1]
    assert dst[-1] == indicated, dst  # the batch ends with the indicated packet ...
    assert at - sent < 1.0, at - sent  # ... and did not wait the 2 s for more


def test_live_packets_carry_the_kernels_receive_time_not_the_readers(tmp_path):
    """A board busy elsewhere reads its socket late: packets sent 0.2 s apart while nobody read must keep their
    0.2 s gaps (the kernel's receive times in the capture ring), or every jitter feature of a board under load is
    wrong."""
    import socket
    import time

    from traffic.packets import live_capture

    batches = live_capture("lo", batch_packets=64, timeout_s=0.5, duration_s=3.0)  # the socket is open now
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # a warm-up packet to another port first: a CI run beside other tests captured 4 of the 5 probes (the missing one
    # sent as the capture started), which is not what this test is about
    s.sendto(b"fediot-warm-up", ("127.0.0.1", 10))
    time.sleep(0.2)
    sent = []
    for _ in range(5):
        sent.append(time.time())
        s.sendto(b"fediot-timestamp-probe", ("127.0.0.1", 9))
        time.sleep(0.2)
    s.close()
    time.sleep(1.0)  # busy elsewhere: the packets wait in the socket
    read_from = time.time()
    times = []
    for batch, _ in batches:  # until the capture's 3 s are over: on lo each packet is seen twice (out and in)
        times += [t for t, port in zip(batch.time, batch.dst_port) if port == 9]
    first: list[float] = []  # one time per packet
    for t in sorted(times):
        if not first or t - first[-1] > 0.05:
            first.append(t)
    assert len(first) == 5 and first[-1] < read_from, ([round(t - sent[0], 4) for t in first], read_from - sent[0])
    # each packet carries the time it was sent (a loaded machine may stretch the sender's 0.2 s sleeps, not this)
    assert all(abs(t - s) < 0.05 for t, s in zip(first, sent)), [round(t - s, 4) for t, s in zip(first, sent)]
    assert min(b - a for a, b in zip(sent, sent[1:])) >= 0.2
