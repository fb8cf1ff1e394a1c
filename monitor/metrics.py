"""The server's `/metrics` in Prometheus' text format (`prometheus_client`), read from the status snapshot at each
scrape. Names follow Prometheus' conventions: `fediot_` prefix, base units (`_seconds`, `_bytes`), `_total` for
counters; per-board series carry `rank` and `device` labels. doc/operating.md lists them with a scrape config."""
from __future__ import annotations

from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# counters of the run: (metric name without _total, status counter, help)
RUN_COUNTERS = (
    ("fediot_evaluations", "evaluations", "evaluations completed"),
    ("fediot_clients_dropped", "clients_dropped", "clients missing from a round's answers, summed over rounds"),
    ("fediot_updates_screened_out", "updates_screened_out", "model updates left out by the screening rule"),
    ("fediot_thresholds_left_out", "thresholds_left_out", "clients' validation statistics left out of the global threshold"),
    ("fediot_messages_rejected", "messages_rejected", "messages from peers rejected (schema, size, sender, rate)"),
    ("fediot_health_rejected", "health_rejected", "board HEALTH messages rejected"),
    ("fediot_bytes_sent", "bytes_sent", "bytes the server sent to clients"),
    ("fediot_bytes_received", "bytes_received", "bytes the server received from clients"),
    ("fediot_status_requests", "page_requests", "requests to the status server"),
    ("fediot_status_refused", "page_refused", "status server requests refused (address or token)"),
)
# per-board gauges from its latest HEALTH message: (metric, health field, scale, help)
BOARD_GAUGES = (
    ("fediot_board_resident_memory_bytes", "rss_mb", 2**20, "the board process's resident memory"),
    ("fediot_board_cpu_percent", "cpu_percent", 1, "the board process's CPU use since its previous report (100 = one core)"),
    ("fediot_board_disk_free_bytes", "disk_free_mb", 2**20, "free disk where the board keeps its run directory"),
    ("fediot_board_uptime_seconds", "uptime_s", 1, "seconds since the board process started"),
    ("fediot_board_last_round", "last_round", 1, "the last round the board trained in"),
)
DETECT_GAUGES = (
    ("fediot_board_detect_packets_per_second", "packets_per_s", "packets/s of detect --follow on the board"),
    ("fediot_board_detect_window_alerts", "window_alerts", "window alerts detect has raised on the board"),
    ("fediot_board_detect_model_round", "model_round", "the federation round of the model detect uses on the board"),
)


class _Families(Collector):
    """A collector whose metric families a function yields at each scrape."""

    def __init__(self, families: Callable[[], Iterable]) -> None:
        self.families = families

    def collect(self):
        return self.families()


def exposition(families: Callable[[], Iterable], process_namespace: str | None = None) -> Callable[[], bytes]:
    """A function that renders `families()` in Prometheus' text format at each call (and, with a namespace, this
    process's memory, CPU and open files): the server's /metrics and detect's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    if process_namespace is not None:
        ProcessCollector(namespace=process_namespace, registry=registry)
    return lambda: generate_latest(registry)


def run_families(s: dict[str, Any]):
    """The run's metric families from a status snapshot (`StatusStore.snapshot`)."""
    c = s["counters"]
    yield GaugeMetricFamily("fediot_rounds_completed", "federated rounds completed", value=c["rounds_completed"])
    yield GaugeMetricFamily("fediot_rounds_planned", "train_args.comm_round", value=s["run"]["rounds"])
    for name, key, help_ in RUN_COUNTERS:
        yield CounterMetricFamily(name, help_, value=c[key])
    by = CounterMetricFamily("fediot_messages_rejected_by", "messages rejected, per sender and kind (at most 256 "
                             "senders; the rest as 'other senders')", labels=["sender", "kind"])
    for sender, kinds in (s.get("rejected_by") or {}).items():
        for kind, n in kinds.items():
            by.add_metric([sender, kind], n)
    yield by
    last = s["rounds"][-1] if s["rounds"] else None
    if last is not None:
        losses = list(last.get("client_losses", {}).values())
        if losses:
            yield GaugeMetricFamily("fediot_round_mean_loss", "mean training loss of the last round",
                                    value=sum(losses) / len(losses))
        yield GaugeMetricFamily("fediot_round_duration_seconds", "wall time of the last round",
                                value=last.get("wall_time_s", 0.0))
        yield GaugeMetricFamily("fediot_round_clients", "clients whose update the last round used",
                                value=len(last.get("clients", [])))
    evals = [r for r in s["rounds"] if "eval" in r]
    if evals:
        rate = GaugeMetricFamily("fediot_eval_rate", "the last evaluation's rates (held-out rows, counts only)",
                                 labels=["threshold", "rate"])
        for mode, key in (("device", "device_threshold"), ("global", "global_threshold")):
            for r in ("tpr", "fpr", "f1"):
                value = evals[-1]["eval"][key].get(r)
                if value is not None:
                    rate.add_metric([mode, r], value)
        yield rate
    up = GaugeMetricFamily("fediot_board_connected", "1 while the board is connected", labels=["rank", "device"])
    seen = GaugeMetricFamily("fediot_board_last_seen_timestamp_seconds", "when the server last heard from the board",
                             labels=["rank", "device"])
    drops = CounterMetricFamily("fediot_board_dropped", "times the board was dropped", labels=["rank", "device"])
    rejoins = CounterMetricFamily("fediot_board_rejoined", "times the board rejoined", labels=["rank", "device"])
    warnings = CounterMetricFamily("fediot_board_warnings", "warnings and errors the board reported",
                                   labels=["rank", "device"])
    gauges = {name: GaugeMetricFamily(name, help_, labels=["rank", "device"]) for name, _, _, help_ in BOARD_GAUGES}
    detect = {name: GaugeMetricFamily(name, help_, labels=["rank", "device"]) for name, _, help_ in DETECT_GAUGES}
    for b in s["boards"]:
        labels = [str(b["rank"]), ",".join(b["clients"])]
        up.add_metric(labels, 1.0 if b["state"] == "connected" else 0.0)
        if b["last_seen"] is not None:
            seen.add_metric(labels, b["last_seen"])
        drops.add_metric(labels, b["dropped"])
        rejoins.add_metric(labels, b["rejoined"])
        h = b["health"]
        if h is None:
            continue
        warnings.add_metric(labels, h["warnings_total"])
        for name, key, scale, _ in BOARD_GAUGES:
            if h.get(key) is not None:
                gauges[name].add_metric(labels, h[key] * scale)
        for name, key, _ in DETECT_GAUGES:
            if h.get("detect") and h["detect"].get(key) is not None:
                detect[name].add_metric(labels, h["detect"][key])
    yield from (up, seen, drops, rejoins, warnings, *gauges.values(), *detect.values())


def run_metrics(snapshot: Callable[[], dict[str, Any]]) -> Callable[[], bytes]:
    """A function that renders the run's metrics (and this process's: memory, CPU, open files) at each call."""
    return exposition(lambda: run_families(snapshot()), "fediot_server")
