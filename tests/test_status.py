"""The status server in process: who may look (loopback, token), what it serves (page, /api/status, /metrics parsed
by Prometheus' parser, a finished run's files and nothing else), HEALTH messages validated field by field, and a
board's text shown as text."""
from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

import pytest

from federation.messages import C2S_HEALTH, Expectations, ProtocolError, validate
from monitor.health import HealthProbe, WarningBuffer
from monitor.http import StatusServer
from monitor.metrics import run_metrics
from monitor.page import render_page
from monitor.status import StatusStore

TOKEN = "s3cret-token-0123456789"


def store_with_a_run(tmp_path) -> StatusStore:
    store = StatusStore({"kind": "federated-deployment", "run_dir": str(tmp_path), "rounds": 3,
                         "clients": {1: ["Danmini_Doorbell"], 2: ["Ennio_Doorbell"]}, "config": {}}, keep_rounds=2)
    store.board_hello(1, "ipv4:10.0.0.5:4444", "certificate of rank 1")
    store.round_record({"round": 1, "client_losses": {"Danmini_Doorbell": 0.2, "Ennio_Doorbell": 0.4},
                        "wall_time_s": 1.5, "clients": ["Danmini_Doorbell", "Ennio_Doorbell"], "dropped": [],
                        "bytes_sent": 100, "bytes_received": 50})
    store.round_record({"round": 2, "client_losses": {"Danmini_Doorbell": 0.1}, "wall_time_s": 1.0,
                        "clients": ["Danmini_Doorbell"], "dropped": ["Ennio_Doorbell"],
                        "screened_out": {"Ennio_Doorbell": "far"}, "threshold_excluded": {"Ennio_Doorbell": "count"},
                        "eval": {"device_threshold": {"tpr": 1.0, "fpr": 0.01, "f1": 0.99},
                                 "global_threshold": {"tpr": 1.0, "fpr": 0.2, "f1": 0.9}}})
    return store


def get(url: str, token: str | None = None, header: bool = True) -> tuple[int, bytes]:
    if token and not header:
        url += ("&" if "?" in url else "?") + "token=" + token
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token and header else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def serve(store: StatusStore, tmp_path, token: str | None = None) -> StatusServer:
    return StatusServer("127.0.0.1", 0, token, store.snapshot, run_metrics(store.snapshot),
                        lambda s: render_page(s, 2.0), tmp_path, store.page_request).start()


def test_page_data_metrics_and_files_on_loopback(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    store = store_with_a_run(tmp_path)
    srv = serve(store, tmp_path)
    try:
        status, page = get(srv.url)
        assert status == 200 and b"<title>FedIoT status</title>" in page
        status, body = get(srv.url + "api/status")
        snap = json.loads(body)
        assert status == 200 and [r["round"] for r in snap["rounds"]] == [1, 2]
        assert snap["boards"][0]["address"] == "ipv4:10.0.0.5:4444" and snap["boards"][1]["state"] == "not connected"
        store.evaluation(2, {"Danmini_Doorbell": {"threshold": 1.5, "tpr": 0.99, "fpr": 0.01}})
        snap = json.loads(get(srv.url + "api/status")[1])
        assert snap["devices"] == {"Danmini_Doorbell": {"threshold": 1.5, "tpr": 0.99, "fpr": 0.01, "round": 2}}
        status, body = get(srv.url + "metrics")
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert fams["fediot_rounds_completed"].samples[0].value == 2
        assert fams["fediot_clients_dropped"].samples[0].value == 1
        assert fams["fediot_updates_screened_out"].samples[0].value == 1
        assert fams["fediot_bytes_sent"].samples[0].value == 100
        assert fams["fediot_round_mean_loss"].samples[0].value == pytest.approx(0.1)
        rates = {(s.labels["threshold"], s.labels["rate"]): s.value for s in fams["fediot_eval_rate"].samples}
        assert rates[("global", "fpr")] == 0.2 and rates[("device", "fpr")] == 0.01
        assert {s.labels["rank"]: s.value for s in fams["fediot_board_connected"].samples} == {"1": 1.0, "2": 0.0}
        # a finished run's files, and nothing else of the file system
        (tmp_path / "report.md").write_text("# report\n")
        (tmp_path / "secret.txt").write_text("no")
        assert get(srv.url + "files/report.md")[0] == 404  # not finished yet
        store.finish(None)
        assert get(srv.url + "files/report.md") == (200, b"# report\n")
        for path in ("files/secret.txt", "files/../secret.txt", "files/%2e%2e/secret.txt", "files//etc/passwd"):
            assert get(srv.url + path)[0] == 404, path
        req = urllib.request.Request(srv.url + "api/status", data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=10)
        assert exc.value.code == 405
    finally:
        srv.stop()


def test_a_token_is_needed_when_set_and_other_addresses_need_one(tmp_path):
    store = store_with_a_run(tmp_path)
    srv = serve(store, tmp_path, TOKEN)
    try:
        for path in ("", "api/status", "metrics"):
            assert get(srv.url + path)[0] == 401
            assert get(srv.url + path, "wrong-token-0123456789")[0] == 401
            assert get(srv.url + path, TOKEN)[0] == 200
            assert get(srv.url + path, TOKEN, header=False)[0] == 200  # ?token= for a browser
        assert store.snapshot()["counters"]["page_refused"] == 6 and srv.refused == 6
    finally:
        srv.stop()
    open_srv = StatusServer("127.0.0.1", 0, None, store.snapshot, run_metrics(store.snapshot))
    assert open_srv.allowed("127.0.0.1", {}, {}) is None
    assert open_srv.allowed("192.168.1.20", {}, {})[0] == 403  # not loopback, no token set: never
    assert open_srv.allowed("::1", {}, {}) is None
    open_srv.httpd.server_close()


def test_the_config_refuses_a_lan_page_without_a_token():
    from fediot.config import validate as validate_config
    from fediot.errors import ConfigError

    with pytest.raises(ConfigError, match="status_args.token"):
        validate_config({"status_args": {"host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match="status_args.token"):
        validate_config({"status_args": {"host": "192.168.1.2", "token": "short"}})
    assert validate_config({"status_args": {"host": "192.168.1.2", "token": TOKEN}}).status.token == TOKEN


def health_fields(tmp_path) -> dict:
    import logging

    buffer = WarningBuffer(keep=3, max_chars=300)
    logger = logging.getLogger("test.status")
    logger.addHandler(buffer)
    try:
        for i in range(5):
            logger.warning("disk almost full %d", i)
    finally:
        logger.removeHandler(buffer)
    probe = HealthProbe(tmp_path, buffer, 30.0, tmp_path / "health.json")
    (tmp_path / "detect_status.json").write_text(json.dumps({
        "packets": 10, "packets_per_s": 5.0, "packet_alerts": 1, "window_alerts": 0, "model_round": 3,
        "alerts": [{"time": 1_765_000_000.5, "device": "Danmini_Doorbell", "host": "10.0.0.66", "score": 41.5,
                    "threshold": 1.2, "state": "ON", "why": "packets per second to new addresses 40x its normal"}],
        "features_version": 2, "written_at": __import__("time").time()}))
    return probe.fields(last_round=4)


def test_a_boards_health_report_is_checked_field_by_field(tmp_path):
    from model.autoencoder import AutoEncoder

    exp = Expectations.of(AutoEncoder(115), ["Danmini_Doorbell"])
    h = health_fields(tmp_path)
    assert h["warnings_total"] == 5 and [w["message"] for w in h["warnings"]] == [f"disk almost full {i}" for i in (2, 3, 4)]
    assert h["detect"]["model_round"] == 3 and h["features_version"] == 2 and h["last_round"] == 4
    validate(C2S_HEALTH, {"health": h}, exp)
    bad = {
        "rss_mb": 1e12, "cpu_percent": math.nan, "disk_free_mb": math.inf, "uptime_s": -1.0, "last_round": 1.5,
        "version": "v" * 65, "features_version": "2", "warnings_total": -1,
        "warnings": [{"time": 1.0, "level": "WARNING", "message": "x" * 301}],
        "detect": {"packets": 1, "packets_per_s": math.nan, "packet_alerts": 0, "window_alerts": 0, "model_round": 1},
    }
    for key, value in bad.items():
        with pytest.raises(ProtocolError, match=f"health.{key}"):
            validate(C2S_HEALTH, {"health": {**h, key: value}}, exp)
    with pytest.raises(ProtocolError, match="at most 100"):
        validate(C2S_HEALTH, {"health": {**h, "warnings": [h["warnings"][0]] * 101}}, exp)
    with pytest.raises(ProtocolError, match="level"):
        validate(C2S_HEALTH, {"health": {**h, "warnings": [{**h["warnings"][0], "level": "<b>"}]}}, exp)
    with pytest.raises(ProtocolError, match="exactly the keys"):
        validate(C2S_HEALTH, {"health": {**h, "extra": 1}}, exp)
    # the board's latest alerts (for the page): bounded in number, names, text, numbers and state
    alert = h["detect"]["alerts"][0]
    for bad_alert, where in (([alert] * 11, "at most 10"), ([{**alert, "why": "x" * 301}], "alerts\\[0\\].why"),
                             ([{**alert, "host": "h" * 129}], "alerts\\[0\\].host"),
                             ([{**alert, "score": math.nan}], "alerts\\[0\\].score"),
                             ([{**alert, "threshold": -1.0}], "alerts\\[0\\].threshold"),
                             ([{**alert, "state": "<b>"}], "state must be ON or OFF"),
                             ([{**alert, "extra": 1}], "exactly the keys"), ("not a list", "must be a list")):
        with pytest.raises(ProtocolError, match=where):
            validate(C2S_HEALTH, {"health": {**h, "detect": {**h["detect"], "alerts": bad_alert}}}, exp)


def test_a_boards_text_cannot_become_markup(tmp_path):
    store = store_with_a_run(tmp_path)
    evil = "</script><script>alert(1)</script><img src=x onerror=alert(2)>"
    fields = health_fields(tmp_path)
    evil_alert = {**fields["detect"]["alerts"][0], "host": evil[:128], "why": evil}
    store.board_health(1, {**fields, "version": evil[:64], "warnings": [{"time": 1.0, "level": "ERROR", "message": evil}],
                           "detect": {**fields["detect"], "alerts": [evil_alert]}})
    page = render_page(store.snapshot(), 2.0)
    embedded = page.split('<script id="initial" type="application/json">', 1)[1].split("</script>", 1)[0]
    assert "<" not in embedded and json.loads(embedded)["boards"][0]["health"]["warnings"][0]["message"] == evil
    assert json.loads(embedded)["boards"][0]["health"]["detect"]["alerts"][0]["why"] == evil
    assert '<table id="alerts">' in page
    assert "innerHTML" not in page  # every value is written with textContent


def test_slow_clients_cannot_hold_the_page_and_a_rebinding_host_is_refused(tmp_path):
    """Issue 34 (6): 16 connections from one address that send a byte a second take at most MAX_PER_CLIENT slots
    and are cut off HEADER_DEADLINE_S after they connect; a request from another address is answered meanwhile. A
    request naming another host (DNS rebinding) is refused without a token."""
    import socket
    import time

    from monitor.http import HEADER_DEADLINE_S

    srv = serve(store_with_a_run(tmp_path), tmp_path)
    slow = []
    try:
        for _ in range(16):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(b"G")
            slow.append(s)
        started = time.monotonic()
        for _ in range(2):  # they keep sending, a byte a second
            time.sleep(1.0)
            for s in slow:
                try:
                    s.sendall(b"E")
                except OSError:
                    pass
        other = socket.create_connection(("127.0.0.1", srv.port), timeout=10, source_address=("127.0.0.2", 0))
        other.sendall(b"GET /api/status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        assert other.recv(64).startswith(b"HTTP/1.0 200")
        assert time.monotonic() - started < HEADER_DEADLINE_S  # answered while they were still at it
        other.close()
        time.sleep(HEADER_DEADLINE_S + 1.0 - (time.monotonic() - started))
        closed = 0
        for s in slow:
            s.settimeout(2.0)
            try:
                closed += s.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == 16  # cut off at the deadline, or never given a slot
    finally:
        for s in slow:
            s.close()
        srv.stop()
    srv = serve(store_with_a_run(tmp_path), tmp_path)
    try:
        for host, ok in (("attacker.example", False), ("attacker.example:8080", False), ("localhost:8080", True),
                         ("[::1]:80", True), ("127.0.0.1", True)):
            req = urllib.request.Request(srv.url + "api/status", headers={"Host": host})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    status = r.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            assert status == (200 if ok else 403), host
    finally:
        srv.stop()


def test_refusals_are_counted_exactly_and_logged_at_a_bounded_rate():
    """Issue 34 (4): 13,415 refusals from one board in 20 s were 13,415 log lines. Now: at most per_minute lines a
    minute a sender, the held-back ones summed into its next line; the counts exact, per sender and kind, and bounded
    in senders whatever arrives."""
    import logging

    from monitor.refusals import MAX_SENDERS, OTHER, RefusalLog, RefusalTally

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("test.refusals")
    logger.addHandler(Collect())
    logger.propagate = False
    now = [0.0]
    refusal_log = RefusalLog(logger, 10, clock=lambda: now[0])
    tally = RefusalTally(20)
    for i in range(13_415):  # 20 s of a health flood
        now[0] = i * 20.0 / 13_415
        refusal_log.warn("rank 3", "fediot_health: faster than every 5s")
        tally.add("rank 3", "fediot_health: faster than every 5s")
    refusal_log.warn("rank 1", "fediot_update: a tensor of the wrong shape")
    assert len(lines) == 11 and sum("rank 1" in x for x in lines) == 1
    now[0] = 61.0
    refusal_log.warn("rank 3", "fediot_health: faster than every 5s")
    assert "and 13405 more from it not logged" in lines[-1]
    for n in range(MAX_SENDERS + 50):  # many senders: the rest under one name
        tally.add(f"peer {n}", "bad magic")
    total, first, by = tally.take()
    assert total == 13_415 + MAX_SENDERS + 50 and len(first) == 20
    assert by["rank 3"] == {"fediot_health": 13_415} and len(by) == MAX_SENDERS + 1 and by[OTHER]["bad magic"] == 51
    assert tally.take()[0] == 0


def test_the_page_stays_after_the_run_only_when_someone_opened_it(monkeypatch):
    """Issue 36: the page vanished as the run ended. It stays status_args.linger_watched_s when it was opened during
    the run, linger_s after any run, and nobody waits for it when nobody looked and linger_s is 0."""
    from types import SimpleNamespace

    from trainer import nodes

    slept: list[float] = []
    monkeypatch.setattr(nodes.time, "sleep", slept.append)
    for views, always, watched, waits in ((0, 0.0, 600.0, []), (3, 0.0, 600.0, [600.0]), (3, 0.0, 0.0, []),
                                          (0, 120.0, 600.0, [120.0]), (3, 900.0, 600.0, [900.0])):
        stopped = []
        server = SimpleNamespace(views=views, url="http://127.0.0.1:1/", stop=lambda: stopped.append(True))
        status = SimpleNamespace(linger_s=always, linger_watched_s=watched)
        node = SimpleNamespace(status_server=server, cfg=SimpleNamespace(status=status))
        slept.clear()
        nodes.ServerNode.shutdown(node)
        assert slept == waits and stopped == [True]
