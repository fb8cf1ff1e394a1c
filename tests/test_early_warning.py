"""Federated early warning (issue 37): the indicator's bounds, the relay's rules (rate, private, duplicates,
confirmation, a liar's bound), a board's store, and end to end in process: a real mutual-TLS relay on loopback, board
A's indicator reaching board B, B alerting at the endpoint's first packet, B's own detector confirming it, and a liar
naming the camera's cloud server raising bounded warnings only."""
from __future__ import annotations

import ipaddress
import json
import time

import pytest

import detect
from deployment.certs import make_certs
from fediot.config import validate
from model.lean import LeanDetector
from relay import Relay, RelayLink
from tests.helpers import frame_batches
from tests.test_watch import lean_model
from traffic.packets import frames_batch
from traffic.simulator import TrafficSimulator, device_ip
from traffic.warning import (Indicator, IndicatorError, IndicatorStore, RelayRules, WarningWatch, is_private,
                             parse_indicator)

CAMERA = "Provision_PT_737E_Security_Camera"
NOW = 1_800_000_000.0


def wire(endpoint="198.51.100.7", **over):
    return {"v": 1, "endpoint": endpoint, "ports": [23], "proto": "tcp", "time": NOW, "score": 3.5,
            "groups": ["FO_src_sockets"], **over}


def test_an_indicator_is_checked_field_by_field():
    ind = parse_indicator(wire(), NOW)
    assert ind.endpoint == "198.51.100.7" and ind.board == "" and ind.status == "warning"
    bad = [wire(endpoint="not-an-ip"), wire(ports=list(range(9))), wire(ports=[70000]), wire(ports=[True]),
           wire(proto="sctp"), wire(score=float("nan")), wire(score=-1.0), wire(time=NOW + 2 * 86400),
           wire(time=1.0), wire(groups=["not a group"]), wire(groups=["H"] * 4), wire(board="board9"),
           wire(v=2), ["not", "an", "object"], wire(endpoint="1" * 100)]
    for fields in bad:
        with pytest.raises(IndicatorError):
            parse_indicator(fields, NOW)
    # a relayed one names its board and status; a board's own may not (the relay takes them from certificates)
    relayed = parse_indicator(wire(board="board1", status="confirmed", boards=["board1", "board2"]), NOW, True)
    assert relayed.status == "confirmed" and relayed.boards == ("board1", "board2")


def test_relay_rules_rate_private_duplicates_and_confirmation():
    rules = RelayRules(confirm_boards=2, ttl_s=3600, rate_per_min=6, burst=3, share_private=False, max_endpoints=100,
                       confirm_windows=1, confirm_share=0.0)
    ind = parse_indicator(wire(), NOW)
    what, out = rules.offer("board1", ind, NOW)
    assert what == "warning" and out.board == "board1" and out.boards == ("board1",)
    assert rules.offer("board1", ind, NOW + 1) == ("duplicate", None)  # the same board again: nothing new
    what, out = rules.offer("board2", ind, NOW + 2)  # a second board's own detector: confirmed
    assert what == "confirmed" and out.status == "confirmed" and out.boards == ("board1", "board2")
    assert rules.offer("board3", parse_indicator(wire("192.168.1.50"), NOW), NOW + 3) == ("kept_private", None)
    # a board's rate: burst 3 in a row, then 6 a minute
    rules2 = RelayRules(2, 3600, 6, 3, False, 100, confirm_windows=1, confirm_share=0.0)
    results = [rules2.offer("liar", parse_indicator(wire(f"203.0.113.{i}"), NOW), NOW)[0] for i in range(10)]
    assert results == ["warning"] * 3 + ["refused_rate"] * 7
    assert rules2.offer("liar", parse_indicator(wire("203.0.113.99"), NOW), NOW + 10)[0] == "warning"
    assert is_private("10.1.2.3") and is_private("fe80::1") and not is_private("8.8.8.8")
    # the endpoints remembered are bounded
    rules3 = RelayRules(2, 3600, 1e9, 10**9, False, 5, confirm_windows=1, confirm_share=0.0)
    for i in range(50):
        rules3.offer("b", parse_indicator(wire(f"203.0.113.{i}"), NOW), NOW)
    assert len(rules3.seen) == 5


def test_a_liar_and_an_honest_passing_false_alarm_do_not_confirm():
    """The liar claims any counts on a benign endpoint; an honest board whose detector raised a passing false alarm on
    it names it too, with its true counts: a few window alerts, or many of a busy endpoint's many packets. Neither is
    sure, so the endpoint stays a warning. An honest board whose detector alerts on nearly every packet of the
    endpoint (an attack) is sure: with the liar, that confirms."""
    rules = RelayRules(confirm_boards=2, ttl_s=3600, rate_per_min=60, burst=10, share_private=False,
                       max_endpoints=100, confirm_windows=10, confirm_share=0.9)
    cloud = "198.51.100.7"
    assert rules.offer("liar", parse_indicator(wire(cloud, windows=10**9, packets=10**9), NOW), NOW)[0] == "warning"
    for windows, packets in ((1, 1), (4, 4), (9, 9), (38, 2000), (10, 12)):  # too few, or too small a share
        assert rules.offer("board2", parse_indicator(wire(cloud, windows=windows, packets=packets), NOW), NOW) \
            == ("duplicate", None)
    assert rules.offer("board3", parse_indicator(wire(cloud), NOW), NOW + 5) == ("duplicate", None)
    what, out = rules.offer("board2", parse_indicator(wire(cloud, windows=10, packets=11), NOW), NOW + 6)
    assert what == "confirmed" and out.boards == ("liar", "board3", "board2")
    # a board once sure stays sure within ttl_s; two honest boards that are sure confirm without any liar
    fresh = RelayRules(2, 3600, 60, 10, False, 100, confirm_windows=10, confirm_share=0.9)
    assert fresh.offer("a", parse_indicator(wire(cloud, windows=20, packets=20), NOW), NOW)[0] == "warning"
    assert fresh.offer("a", parse_indicator(wire(cloud, windows=21, packets=900), NOW), NOW)[0] == "duplicate"
    assert fresh.offer("b", parse_indicator(wire(cloud, windows=50, packets=51), NOW), NOW)[0] == "confirmed"
    for bad in ({"windows": 0}, {"windows": -1}, {"windows": 2 ** 40}, {"windows": 1.5}, {"windows": True},
                {"windows": "5"}, {"windows": 5, "packets": 4}, {"packets": 2 ** 40}, {"packets": None}):
        with pytest.raises(IndicatorError, match="windows|packets"):
            parse_indicator(wire(cloud, **bad), NOW)


def test_a_board_keeps_a_bounded_store_and_warns_once_per_endpoint():
    store = IndicatorStore(max_entries=3, ttl_s=100)
    for i in range(5):
        store.put(Indicator(f"203.0.113.{i}", (), "other", NOW, 1.0, (), board="board1"), NOW)
    assert len(store.by_ip) == 3 and store.get(ipaddress.ip_address("203.0.113.0").packed, NOW) is None
    watch = WarningWatch(store, confirm_s=60)
    a = ipaddress.ip_address("203.0.113.4").packed
    other = ipaddress.ip_address("10.0.0.2").packed
    first = watch.first_packets([other, a, a], [a, other, other], [NOW + 1, NOW + 2, NOW + 3], [0, 1, 2])
    assert [(n, addr) for n, addr, _ in first] == [(0, a)]  # its first packet, once
    assert watch.confirm(a) is not None and watch.confirm(a) is None
    b = ipaddress.ip_address("203.0.113.3").packed
    watch.first_packets([b], [other], [NOW + 5], [0])
    assert watch.lapsed(NOW + 30) == [] and [addr for addr, _ in watch.lapsed(NOW + 70)] == [b]
    assert watch.counts == {"raised": 2, "confirmed_here": 1, "cleared": 1}
    assert store.get(a, NOW + 200) is None  # its time is over


def _wait(predicate, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_board_warns_at_the_first_packet_and_confirms_and_a_liar_stays_a_bounded_warning(tmp_path):
    certs = tmp_path / "certs"
    make_certs(certs, 3, [])
    cfg = validate({"detect_args": {"warn_burst": 6, "warn_rate_per_min": 1}}).detect
    relay = Relay("127.0.0.1", 0, certs, cfg).start()
    stores = {r: IndicatorStore(cfg.warn_max_indicators, cfg.warn_ttl_s) for r in (1, 2, 3)}
    links = {r: RelayLink(f"127.0.0.1:{relay.port}", certs, r, stores[r]).start() for r in (1, 2, 3)}
    try:
        assert all(link.connected.wait(20) for link in links.values())
        assert _wait(lambda: len(relay.boards) == 3)
        packets = TrafficSimulator(CAMERA, seed=4).capture(240.0)
        batch = frames_batch(packets)
        cam = ipaddress.ip_address(device_ip(CAMERA)).packed
        remotes = [batch.dst_ip[n] if batch.src_ip[n] == cam else batch.src_ip[n] for n in range(len(batch))]
        public = [r for r in dict.fromkeys(remotes) if not ipaddress.ip_address(r).is_private]
        assert len(public) >= 2, "the simulated camera talks to public cloud addresses"
        attacker, cloud = public[0], public[1]
        attacker_text = str(ipaddress.ip_address(attacker))
        first_seen = min(batch.time[n] for n in range(len(batch)) if remotes[n] == attacker)

        # board 1's detector saw the attacker: its indicator reaches boards 2 and 3 as a warning
        links[1].publish(Indicator(attacker_text, (23,), "tcp", first_seen - 60, 4.2, ("FO_src_sockets",)))
        assert _wait(lambda: len(stores[2].inbox) == 1 and len(stores[3].inbox) == 1)
        assert stores[2].inbox[0].board == "board1" and stores[2].inbox[0].status == "warning"
        assert not stores[1].inbox  # not sent back to the board that saw it
        # ... and its detector kept alerting on it: its count reaches warn_confirm_windows (one board: still a warning,
        # nothing new to relay)
        links[1].publish(Indicator(attacker_text, (23,), "tcp", first_seen - 59, 4.2, ("FO_src_sockets",),
                                   windows=cfg.warn_confirm_windows, packets=cfg.warn_confirm_windows))
        assert _wait(lambda: relay.rules.counts["duplicate"] == 1)

        # a liar (board 3) names the camera's own cloud server, and 12 more addresses: at most warn_burst reach board 2,
        # none confirmed
        cloud_text = str(ipaddress.ip_address(cloud))
        links[3].publish(Indicator(cloud_text, (443,), "tcp", first_seen, 9.9, ("HH",)))
        for i in range(12):
            links[3].publish(Indicator(f"203.0.113.{i + 1}", (443,), "tcp", first_seen, 9.9, ("HH",)))
        assert _wait(lambda: relay.refused.get("board3", 0) >= 7)
        time.sleep(0.3)
        liar_said = [x for x in stores[2].inbox if x.board == "board3"]
        assert len(liar_said) == cfg.warn_burst and all(x.status == "warning" for x in liar_said)

        # board 2 watches the camera: the attacker's first packet is an alert at once, before any window; its own
        # detector (every window alerts with this model) confirms it, and its indicator makes the endpoint confirmed
        # at board 1
        model = LeanDetector.load(lean_model(tmp_path / "model.npz", {"cam": 1e-12}))
        warning = WarningWatch(stores[2], cfg.warn_confirm_s)
        out = tmp_path / "b.jsonl"
        with out.open("w") as sink:
            summary = detect.run_detection(model, frame_batches(packets, 256), None, 5, sink,
                                           [detect.parse_watch(f"cam={device_ip(CAMERA)}")], cfg,
                                           warning=warning, link=links[2])
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        early = [x for x in lines if x.get("early_warning") and not x.get("cleared")]
        on_attacker = [x for x in early if x["host"] == attacker_text]
        assert len(on_attacker) == 1 and on_attacker[0]["time"] == first_seen  # at its first packet
        assert on_attacker[0]["from_board"] == "board1" and on_attacker[0]["status"] == "warning"
        first_window = min(x["time"] for x in lines if x["window_alert"])
        assert on_attacker[0]["time"] <= first_window
        assert any(x.get("early_warning_confirmed") == "board1" for x in lines)
        assert summary["early_warnings"]["confirmed_here"] >= 1
        # the liar's cloud server: a warning (its first packet), never confirmed by the liar alone
        assert [x["status"] for x in early if x["host"] == cloud_text] == ["warning"]
        # board 3 (which named nothing) hears it is confirmed; boards 1 and 2, which named it, are not sent it back
        assert _wait(lambda: any(x.endpoint == attacker_text and x.status == "confirmed" for x in stores[3].inbox)), (relay.refused, relay.rules.counts, links[2].counts)
        assert not any(x.endpoint == attacker_text for x in stores[1].inbox)
        assert summary["relay"]["sent"] >= 1
        # the relay's status page lists the boards and the warnings, confirmed or not (and /api/status, /metrics)
        import urllib.request

        from relay import serve_status

        page = serve_status(relay, 0, "127.0.0.1", None, 2.0)
        try:
            body = urllib.request.urlopen(page.url, timeout=10).read().decode()
            api = json.loads(urllib.request.urlopen(page.url + "api/status", timeout=10).read())
            metrics = urllib.request.urlopen(page.url + "metrics", timeout=10).read().decode()
        finally:
            page.stop()
        assert attacker_text in body and "confirmed" in body and "board1, board2" in body and cloud_text in body
        assert api["boards"] == ["board1", "board2", "board3"] and api["refused"]["board3"] >= 7
        assert any(r["endpoint"] == attacker_text and r["status"] == "confirmed" for r in api["recent"])
        assert "fediot_relay_boards_connected 3.0" in metrics
    finally:
        for link in links.values():
            link.stop()
        relay.stop()


def test_the_relay_refuses_what_is_not_an_indicator_and_goes_on(tmp_path):
    import socket
    import ssl

    certs = tmp_path / "certs"
    make_certs(certs, 2, [])
    cfg = validate({}).detect
    relay = Relay("127.0.0.1", 0, certs, cfg).start()
    store = IndicatorStore(10, 60)
    link = RelayLink(f"127.0.0.1:{relay.port}", certs, 2, store).start()
    try:
        assert link.connected.wait(20)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_cert_chain(certs / "client1.pem", certs / "client1.key")
        ctx.load_verify_locations(certs / "ca.pem")
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", relay.port)), server_hostname="127.0.0.1") as c:
            now = time.time()
            c.sendall(b"\xff\xfe garbage\n" + json.dumps(wire(board="board2", time=now)).encode() + b"\n"
                      + b"[" * 1000 + b"\n" + json.dumps(wire(time=now)).encode() + b"\n")
            assert _wait(lambda: len(store.inbox) == 1)  # the good one, after three refused
            assert relay.refused["board1"] == 3
            c.sendall(b"x" * 5000)  # a line beyond the bound: that connection ends, the relay goes on
            assert _wait(lambda: "board1" not in relay.boards)
        # no certificate: refused in the handshake
        plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        plain.load_verify_locations(certs / "ca.pem")
        with pytest.raises((ssl.SSLError, OSError)):
            with plain.wrap_socket(socket.create_connection(("127.0.0.1", relay.port)),
                                   server_hostname="127.0.0.1") as c:
                c.sendall(json.dumps(wire()).encode() + b"\n")
                c.recv(10)
        # connections that never finish their handshake: at most MAX_HANDSHAKES wait, the rest are closed at once,
        # and a board still connects
        from relay import MAX_HANDSHAKES

        idle = [socket.create_connection(("127.0.0.1", relay.port)) for _ in range(MAX_HANDSHAKES + 20)]
        try:
            assert _wait(lambda: sum(v for k, v in relay.refused.items() if "before its certificate" in k) >= 20)
        finally:
            for c in idle:
                c.close()
        assert link.connected.is_set() and "board2" in relay.boards
    finally:
        link.stop()
        relay.stop()


def test_a_board_that_joins_later_gets_the_warnings_in_force(tmp_path):
    """A board whose detect connects after an indicator was relayed (a reboot; detect waiting for its first model:
    a CI run of the LAN test missed the liar's warning so) is sent what is in force, not what it named itself."""
    certs = tmp_path / "certs"
    make_certs(certs, 2, [])
    cfg = validate({}).detect
    relay = Relay("127.0.0.1", 0, certs, cfg).start()
    stores = {r: IndicatorStore(10, 60) for r in (1, 2)}
    first = RelayLink(f"127.0.0.1:{relay.port}", certs, 1, stores[1]).start()
    late = None
    try:
        assert first.connected.wait(20)
        first.publish(Indicator("198.51.100.9", (23,), "tcp", time.time(), 2.0, ("H",)))
        assert _wait(lambda: len(relay.recent) == 1)
        late = RelayLink(f"127.0.0.1:{relay.port}", certs, 2, stores[2]).start()
        assert _wait(lambda: len(stores[2].inbox) == 1)
        assert stores[2].inbox[0].endpoint == "198.51.100.9" and stores[2].inbox[0].board == "board1"
        first.stop()  # board 1 reconnecting is not sent its own indicator back
        again = RelayLink(f"127.0.0.1:{relay.port}", certs, 1, stores[1]).start()
        assert again.connected.wait(20)
        time.sleep(0.5)
        assert not stores[1].inbox
        again.stop()
    finally:
        first.stop()
        if late is not None:
            late.stop()
        relay.stop()
