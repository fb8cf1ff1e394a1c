"""Issue 24 in real processes: a 3-board loopback deployment (gRPC + mutual TLS) with its status page, read by
headless Chromium (Debian's package), and its /metrics scraped during the run and parsed with Prometheus' own
parser; one board (attack_args health_lies) sends health reports too often and with impossible numbers.

The values the page shows for rounds and boards must equal rounds.jsonl and what the boards reported
(RUN_DIR/health.json on each board). The screenshot is kept in the test's directory (status-page.png)."""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.deploy_helpers import DEVICES, client, deploy_config, read_rounds, run_dir_of, server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


class Cells(HTMLParser):
    """Table rows by table id: [{data-field: text}], and the rows' data-* attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, str]]] = {}
        self.table: str | None = None
        self.row: dict[str, str] | None = None
        self.field: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.table = a.get("id")
            self.tables.setdefault(self.table, [])
        elif tag == "tr" and self.table and any(k.startswith("data-") for k in a):
            self.row = {"@" + k: v for k, v in a.items()}
            self.tables[self.table].append(self.row)
        elif tag == "td" and self.row is not None:
            self.field = a.get("data-field")
            self.row[self.field] = ""

    def handle_endtag(self, tag):
        if tag == "td":
            self.field = None
        elif tag == "tr":
            self.row = None
        elif tag == "table":
            self.table = None

    def handle_data(self, data):
        if self.row is not None and self.field is not None:
            self.row[self.field] += data


def chromium(tmp: Path, *args: str) -> str:
    out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_status_page_in_a_browser_and_metrics_during_a_run(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    # FedProx: its proximal weight reaches the boards in each round's plan over the wire (checked at the end)
    cfg = deploy_config(tmp_path, train_args={"comm_round": 8, "epochs": 2, "federated_optimizer": "FedProx",
                                              "fedprox_mu": 0.01},
                        validation_args={"frequency_of_the_test": 4},
                        status_args={"port": 0, "linger_s": 120, "health_interval_s": 1, "refresh_s": 1},
                        attack_args={"malicious_ranks": [3], "attack": "health_lies", "attack_scale": 6,
                                     "red_team": True})
    srv = server(cfg)
    boards = [client(n, cfg) for n in (1, 2, 3)]
    try:
        url = srv.wait_for("status page: http://").split("status page: ")[1].split()[0]
        # -- /metrics while the run goes, parsed by Prometheus' own parser
        srv.wait_for("round 2/8", timeout=300)
        families = {f.name: f for f in text_string_to_metric_families(
            urllib.request.urlopen(url + "metrics", timeout=10).read().decode())}
        assert families["fediot_rounds_completed"].samples[0].value >= 2
        assert families["fediot_rounds_planned"].samples[0].value == 8
        assert {s.labels["rank"] for s in families["fediot_board_connected"].samples} == {"1", "2", "3"}
        assert "fediot_messages_rejected" in families and "fediot_server_process_resident_memory_bytes" in families
        srv.wait_for("report: ")  # the run is done; the page stays up (status_args.linger_s)
        for b in boards:
            assert b.finish(60) == 0, b.stdout + b.stderr
        run_dir = Path(srv.wait_for("run directory").split("run directory ")[-1])
        # -- the page in a real browser
        dom = chromium(tmp_path, "--virtual-time-budget=4000", "--dump-dom", url)
        chromium(tmp_path, "--window-size=1400,1100", f"--screenshot={tmp_path / 'status-page.png'}", url)
        metrics = urllib.request.urlopen(url + "metrics", timeout=10).read().decode()
    finally:
        for p in (srv, *boards):
            p.kill()
    assert (tmp_path / "status-page.png").stat().st_size > 10_000
    cells = Cells()
    cells.feed(dom)
    rounds = read_rounds(run_dir)
    shown = {int(r["round"]): r for r in cells.tables["rounds"]}
    assert sorted(shown) == [r["round"] for r in rounds] == list(range(1, 9))
    for r in rounds:
        s = shown[r["round"]]
        losses = list(r["client_losses"].values())
        assert s["mean_loss"] == f"{sum(losses) / len(losses):.5f}" and int(s["clients"]) == len(r["clients"])
        # the page rounds in JavaScript (toFixed: 0.125 -> "0.13"), Python to even ("0.12"): a display rounding apart
        assert abs(float(s["wall_time_s"]) - r["wall_time_s"]) <= 0.005 + 1e-9
        assert s["dropped"] == ", ".join(r["dropped"])
        if "eval" in r:
            assert s["tpr"] == f"{r['eval']['device_threshold']['tpr']:.4f}"
            assert s["fpr"] == f"{r['eval']['device_threshold']['fpr']:.4f}"
    # each device's own threshold and rates at the last evaluation: what metrics.json says
    final = json.loads((run_dir / "metrics.json").read_text())["devices"]
    shown_devices = {d["@data-device"]: d for d in cells.tables["devices"]}
    assert sorted(shown_devices) == sorted(final)
    for device, e in final.items():
        s = shown_devices[device]
        assert s["round"] == "8" and s["tpr"] == f"{e['tpr']:.4f}" and s["fpr"] == f"{e['fpr']:.4f}", (s, e)
        assert s["threshold"] == f"{next(iter(e['thresholds'].values())):.4f}"
        assert s["window_fpr"] == f"{e['window']['fpr']:.4f}"
    assert "alerts" in cells.tables  # the boards' alert list (no detector runs beside these boards: no rows)
    # the boards: what each reported last (its RUN_DIR/health.json) is what the page shows
    shown_boards = {int(b["@data-rank"]): b for b in cells.tables["boards"]}
    assert sorted(shown_boards) == [1, 2, 3]
    for rank in (1, 2):
        said = json.loads((run_dir_of(boards[rank - 1]) / "health.json").read_text())
        b = shown_boards[rank]
        assert b["clients"] == DEVICES[rank - 1] and b["version"] == said["version"]
        assert b["last_round"] == str(said["last_round"]) == "8"
        assert b["identity"] == f"certificate of rank {rank}" and b["address"].startswith("ipv4:127.0.0.1:")
        assert float(b["rss_mb"]) > 50 and b["dropped"] == "0"
    # the lying board: its impossible reports and its too frequent ones were rejected and counted; none reached the page
    liar = shown_boards[3]
    assert liar["rss_mb"] and float(liar["rss_mb"]) < 10_000 and "alert(1)" not in dom
    rejected = {f.name: f.samples[0].value for f in text_string_to_metric_families(metrics) if f.samples}
    assert rejected["fediot_health_rejected"] >= 2
    reasons = [r for r in cells.tables["rejections"] if "fediot_health" in r.get("reason", "")]
    assert reasons and all(r["from"] == "rank 3" for r in reasons)
    assert any("health.rss_mb" in r["reason"] for r in reasons) and any("faster than" in r["reason"] for r in reasons)
    # every refusal counted per sender and kind: /metrics, the page and rounds.jsonl agree with the total
    by = {(x.labels["sender"], x.labels["kind"]): x.value for f in text_string_to_metric_families(metrics)
          if f.name == "fediot_messages_rejected_by" for x in f.samples}
    assert sum(by.values()) == rejected["fediot_messages_rejected"] and by.get(("rank 3", "fediot_health"), 0) >= 2
    assert {(r["from"], r["kind"]): float(r["count"]) for r in cells.tables["rejected_by"]} == by
    assert sum(n for r in rounds for kinds in r.get("rejected_by", {}).values() for n in kinds.values()) == sum(
        r["rejected"] for r in rounds)
    # FedProx over the wire: every board trained every round with the server's proximal weight
    for rank in (1, 2, 3):
        trained = [json.loads(x) for x in (run_dir_of(boards[rank - 1]) / f"{DEVICES[rank - 1]}.jsonl").read_text().splitlines()]
        assert [t["round"] for t in trained] == list(range(1, 9)) and all(t["prox_mu"] == 0.01 for t in trained)
    assert all(r["algorithm"] == "FedProx" for r in rounds)
