"""The messages of a federated run, each defined once: a frozen dataclass whose fields are `rule`s (a check, a few
words, how the value is encoded), registered by `@message(type, direction)`. From that one definition come the
validation (`validate`: exact field names, then each field's check in order against what the receiver knows), the
encoding (`to_fields`), the typed form (`of`), which messages may carry tensors (`tensors_allowed`) and the protocol
table in doc/architecture.md (`protocol_table`, compared by a test). `ProtocolError` names what was wrong; the
receiver logs it, counts it and goes on. A server request reaches the client's answers as a `Request` (what all are
told, and each client's `ClientOrder`). Every grid receives through a `Receiver` (decode -> validate -> type, refused
and counted).

What a well-formed lie can still do (a plausible but poisoned update, inflated statistics) is the robust-aggregation
layer's business.

A server message is about one or more clients of the receiving rank (`clients`, with what differs per client):
a board is one client (its device); a simulation worker rank holds several and gets one message per phase for
all of its clients in that phase (one copy of the model per rank, not one per client), and answers with one
message per client, each as soon as it is done. The server accepts an answer only for a client it asked that
rank about.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import torch

from data.nbaiot import N_FEATURES
from model.threshold import N_HIST_BINS
from federation.wire import WireError, decode
from fediot.checks import InputError, fail as _fail, integer as _int, mapping as _dict, number as _num
from fediot.checks import MAX_VALUE, error_stats as check_error_stats, feature_stats as check_feature_stats
from fediot.checks import string as _str, vector as _vector
from model.detector import ErrorStats
from model.normalization import FeatureStats
from monitor.health import ALERT_FIELDS, ALERT_NAME_CHARS, ALERT_WHY_CHARS, DETECT_ALERTS, DETECT_FIELDS, LEVELS

C2S_HELLO = "fediot_hello"
S2C_WELCOME = "fediot_welcome"
S2C_PING = "fediot_ping"
S2C_TRAIN = "fediot_train"
C2S_UPDATE = "fediot_update"
S2C_EVAL_STATS = "fediot_eval_stats"
C2S_VAL_STATS = "fediot_val_stats"
S2C_EVAL_COUNTS = "fediot_eval_counts"
C2S_REPORT = "fediot_report"
S2C_FINISH = "fediot_finish"
C2S_HEALTH = "fediot_health"

MAX_SECONDS = 10**7
# HEALTH: what a board's numbers can be (a board with 1 PB of free disk or 10 TB of RAM is lying or broken)
MAX_HEALTH_MB = 1e9
MAX_CPU_PERCENT = 100.0 * 1024  # 1,024 cores busy
MAX_HEALTH_WARNINGS = 100
MAX_WARNING_CHARS = 300
MAX_PACKETS = 10**15
# A header carries no tensor bytes: at most one count report (a 4,098-bin histogram per attack file, ~0.5 MB) or one
# request naming every client of a rank (~0.2 MB at 1,008 clients). Anything larger is refused before parsing.
MAX_HEADER_BYTES = 4 * 2**20
# VAL_STATS: a device's packets a day (one an hour to ~116,000 a second)
MIN_ROWS_PER_DAY, MAX_ROWS_PER_DAY = 24.0, 1e10


ProtocolError = InputError  # a message that does not match its type's schema


@dataclass(frozen=True)
class Expectations:
    """What the receiver knows to check against: the global model's tensors, features, client names."""

    model_shapes: dict[str, tuple[int, ...]]
    n_features: int
    devices: frozenset[str]  # the client names the receiver may hear about (membership checks only)

    @classmethod
    def of(cls, model: torch.nn.Module, devices: list[str]) -> "Expectations":
        return cls({k: tuple(v.shape) for k, v in model.state_dict().items()}, model.input_dim, frozenset(devices))


# ------------------------------------------------------------------------------------------ field checks
# A field's check is called as check(value, expectations, all the message's fields, the field's name) and raises
# ProtocolError; fields are checked in their definition's order, so a check may read the fields defined before it.
Check = Callable[[Any, Expectations, dict[str, Any], str], None]


def _integer(lo: int = 0, hi: int = 10**9) -> Check:
    return lambda v, exp, p, name: _int(v, name, lo, hi) and None


def _number(lo: float = 0.0, hi: float = float("inf")) -> Check:
    return lambda v, exp, p, name: _num(v, name, lo, hi) and None


def _round(v: Any, exp: Expectations, p: dict[str, Any], name: str) -> None:
    _int(v, name, 0, 10**6)


def _known(what: str) -> Check:
    """A name the receiver knows: one of the configured clients (`what` says which kind of name it is)."""
    def check(v: Any, exp: Expectations, p: dict[str, Any], name: str) -> None:
        if _str(v, name) not in exp.devices:
            _fail(f"{name} {v!r} is not one of the configured {what}")
    return check


def _state(v: Any, exp: Expectations, p: dict[str, Any] | None = None, name: str = "model") -> None:
    state = _dict(v, name, set(exp.model_shapes))
    for key, shape in exp.model_shapes.items():
        t = state[key]
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or tuple(t.shape) != shape:
            _fail(f"{name}[{key}] must be a float32 tensor of shape {shape}")
        if not torch.isfinite(t).all():
            _fail(f"{name}[{key}] holds NaN or Inf")


def _normalizer(v: Any, exp: Expectations, p: dict[str, Any], name: str) -> None:
    d = _dict(v, name, {"transform", "method", "offset", "scale"})
    if d["transform"] not in ("log1p", "none") or d["method"] not in ("zscore", "minmax"):
        _fail(f"{name} transform/method unknown")
    _vector(d["offset"], f"{name}.offset", exp.n_features)
    _vector(d["scale"], f"{name}.scale", exp.n_features)
    if min(d["scale"]) <= 0:
        _fail(f"{name}.scale must be > 0")


def _feature_stats(v: Any, exp: Expectations, p: dict[str, Any], name: str) -> None:
    s = _dict(v, name, {"count", "total", "total_sq", "minimum", "maximum"})
    if _int(s["count"], f"{name}.count", 1) != p["n_train"]:
        _fail(f"{name}.count must equal n_train")
    for key in ("total", "minimum", "maximum"):
        _vector(s[key], f"{name}.{key}", exp.n_features)
    _vector(s["total_sq"], f"{name}.total_sq", exp.n_features, 0.0)
    check_feature_stats(s["count"], s["total"], s["total_sq"], s["minimum"], s["maximum"], name)


def _held_out(v: Any, exp: Expectations, p: dict[str, Any], name: str) -> None:
    h = _dict(v, name, {"validation", "test", "attacks"})
    _int(h["validation"], f"{name}.validation", 1)
    _int(h["test"], f"{name}.test")
    for attack, n in _dict(h["attacks"], f"{name}.attacks").items():
        _str(attack, f"{name}.attacks name")
        _int(n, f"{name}.attacks.{attack}")


def _val_stats(v: Any, exp: Expectations, p: dict[str, Any], name: str) -> None:
    s = _dict(v, name)
    optional = {"window_hist", "rows_per_day", "tail_clusters", "tail_exceedances"}
    if not {"count", "total", "total_sq"} <= set(s) <= {"count", "total", "total_sq"} | optional:
        _fail(f"{name} must have the keys count, total, total_sq and may have {', '.join(sorted(optional))}, not "
              f"{sorted(map(str, s))[:10]}")
    _int(s["count"], f"{name}.count", 1)
    _num(s["total"], f"{name}.total")
    _num(s["total_sq"], f"{name}.total_sq")
    check_error_stats(s["count"], s["total"], s["total_sq"], name)
    if "window_hist" in s:  # at most one window score per row, at least one
        _hist(s["window_hist"], f"{name}.window_hist")
        if not 1 <= sum(s["window_hist"].values()) <= s["count"]:
            _fail(f"{name}.window_hist must count 1..{s['count']} window scores ({name}.count rows)")
    if "rows_per_day" in s:
        _num(s["rows_per_day"], f"{name}.rows_per_day", MIN_ROWS_PER_DAY, MAX_ROWS_PER_DAY)
    if ("tail_clusters" in s) != ("tail_exceedances" in s):
        _fail(f"{name}.tail_clusters and tail_exceedances come together")
    if "tail_clusters" in s:  # clusters of window scores: at most as many as the scores over the tail, at most the rows
        _int(s["tail_exceedances"], f"{name}.tail_exceedances", 0, s["count"])
        _int(s["tail_clusters"], f"{name}.tail_clusters", 0, s["tail_exceedances"])


def _counts(v: Any, name: str, keys: set[str]) -> None:
    for k, x in _dict(v, name, keys).items():
        _int(x, f"{name}.{k}")


def _hist(v: Any, name: str) -> None:
    for k, x in _dict(v, name).items():
        if not k.isdigit() or int(k) >= N_HIST_BINS:
            _fail(f"{name} has a bin {k!r} outside 0..{N_HIST_BINS - 1}")
        _int(x, f"{name}[{k}]")


def _modes(modes: Any, name: str, allowed: set[str]) -> None:
    if not isinstance(modes, dict) or not modes or not set(modes) <= allowed:
        _fail(f"{name} must hold {' and/or '.join(repr(m) for m in sorted(allowed))}")
    for mode, m in modes.items():
        m = _dict(m, f"{name}.{mode}", {"threshold", "benign", "attacks", "window"})
        _num(m["threshold"], f"{name}.{mode}.threshold", 0.0, MAX_VALUE)  # an error, as every threshold is
        _counts(m["benign"], f"{name}.{mode}.benign", {"fp", "tn"})
        _counts(m["window"], f"{name}.{mode}.window", {"tp", "fn", "fp", "tn"})
        for attack, c in _dict(m["attacks"], f"{name}.{mode}.attacks").items():
            _counts(c, f"{name}.{mode}.attacks.{attack}", {"tp", "fn"})


def _validation_and_hist(r: dict[str, Any], name: str) -> None:
    val = _dict(r["validation"], f"{name}.validation", {"n", "mse_mean", "mse_std"})
    _int(val["n"], f"{name}.validation.n", 1)
    _num(val["mse_mean"], f"{name}.validation.mse_mean", 0.0, MAX_VALUE)
    _num(val["mse_std"], f"{name}.validation.mse_std", 0.0, MAX_VALUE)
    h = _dict(r["hist"], f"{name}.hist", {"benign", "attacks"})
    _hist(h["benign"], f"{name}.hist.benign")
    for attack, hist in _dict(h["attacks"], f"{name}.hist.attacks").items():
        _hist(hist, f"{name}.hist.attacks.{attack}")


def _report(v: Any, exp: Expectations, p: dict[str, Any], name: str) -> None:
    keys = {"device", "missing_attacks", "validation", "modes", "hist"}
    r = _dict(v, name)
    if set(r) not in (keys, keys | {"personal"}):
        _fail(f"{name} must have exactly the keys {sorted(keys)} (and 'personal'), not {sorted(map(str, r))[:10]}")
    if _str(r["device"], f"{name}.device") not in exp.devices:
        _fail(f"{name}.device is not a configured device")
    if not isinstance(r["missing_attacks"], list) or not all(isinstance(a, str) for a in r["missing_attacks"]):
        _fail(f"{name}.missing_attacks must be a list of names")
    _validation_and_hist(r, name)
    _modes(r["modes"], f"{name}.modes", {"global", "device"})
    if "personal" in r:  # the client's personalised model at its own threshold (validation_args.personalise_epochs)
        pr = _dict(r["personal"], f"{name}.personal", {"modes", "validation", "hist"})
        _validation_and_hist(pr, f"{name}.personal")
        _modes(pr["modes"], f"{name}.personal.modes", {"personal"})


def _addressed(keys: set[str], each: Callable[[str, dict[str, Any]], None] | None = None) -> Check:
    """The clients a server message is about: 1..(the receiver's clients) of them, no other, each with exactly
    `keys` (its own fields, then checked by `each`) and, in a message with a normaliser, optionally `scale`: its
    device's widened feature scales, each at least the normaliser's (`Normalizer.widened_for`)."""
    def check(v: Any, exp: Expectations, p: dict[str, Any], name: str) -> None:
        clients = _dict(v, name)
        if not 1 <= len(clients) <= len(exp.devices):
            _fail(f"{name} must name 1..{len(exp.devices)} clients, not {len(clients)}")
        for client, own in clients.items():
            if client not in exp.devices:
                _fail(f"client {client[:200]!r} is not one of the configured clients")
            if "normalizer" in p and isinstance(own, dict) and "scale" in own:
                _dict(own, f"{name}[{client}]", keys | {"scale"})
                _vector(own["scale"], f"{name}[{client}].scale", exp.n_features)
                if any(w < s for w, s in zip(own["scale"], p["normalizer"]["scale"])):
                    _fail(f"{name}[{client}].scale must not be below normalizer.scale")
            else:
                _dict(own, f"{name}[{client}]", keys)  # a configured name: short
            if each is not None:
                each(f"{name}[{client}]", own)
    return check


def _plan(where: str, fields: dict[str, Any]) -> None:
    try:
        RoundPlan.from_dict(fields["plan"])
    except InputError as exc:
        _fail(f"{where}.plan: {exc}")


def _device_threshold(where: str, fields: dict[str, Any]) -> None:
    _num(fields["device_threshold"], f"{where}.device_threshold", 0.0, MAX_VALUE)


def _window(v: Any, exp: Expectations, p: dict[str, Any], name: str) -> None:
    if _int(v, name, 1, 10**6) % 2 == 0:
        _fail(f"{name} must be odd")


def _health(v: Any, exp: Expectations, p: dict[str, Any], name: str) -> None:
    h = _dict(v, name, {"version", "features_version", "rss_mb", "cpu_percent", "disk_free_mb", "uptime_s",
                        "last_round", "detect", "warnings_total", "warnings"})
    _str(h["version"], f"{name}.version", 64)
    if h["features_version"] is not None:
        _int(h["features_version"], f"{name}.features_version", 0, 10**6)
    _num(h["rss_mb"], f"{name}.rss_mb", 0.0, MAX_HEALTH_MB)
    _num(h["cpu_percent"], f"{name}.cpu_percent", 0.0, MAX_CPU_PERCENT)
    _num(h["disk_free_mb"], f"{name}.disk_free_mb", 0.0, MAX_HEALTH_MB)
    _num(h["uptime_s"], f"{name}.uptime_s", 0.0, MAX_SECONDS * 100)
    if h["last_round"] is not None:
        _int(h["last_round"], f"{name}.last_round", 0, 10**6)
    if h["detect"] is not None:
        d = _dict(h["detect"], f"{name}.detect", set(DETECT_FIELDS))
        for key in ("packets", "packet_alerts", "window_alerts"):
            _int(d[key], f"{name}.detect.{key}", 0, MAX_PACKETS)
        _num(d["packets_per_s"], f"{name}.detect.packets_per_s", 0.0, 1e9)
        if d["model_round"] is not None:
            _int(d["model_round"], f"{name}.detect.model_round", 0, 10**6)
        alerts = d["alerts"]
        if not isinstance(alerts, list) or len(alerts) > DETECT_ALERTS:
            _fail(f"{name}.detect.alerts must be a list of at most {DETECT_ALERTS}")
        for i, a in enumerate(alerts):
            where = f"{name}.detect.alerts[{i}]"
            a = _dict(a, where, set(ALERT_FIELDS))
            _num(a["time"], f"{where}.time", 0.0, 1e11)
            _str(a["device"], f"{where}.device", ALERT_NAME_CHARS)
            _str(a["host"], f"{where}.host", ALERT_NAME_CHARS)
            _num(a["score"], f"{where}.score", 0.0, MAX_VALUE)
            _num(a["threshold"], f"{where}.threshold", 0.0, MAX_VALUE)
            if a["state"] not in ("ON", "OFF"):
                _fail(f"{where}.state must be ON or OFF")
            _str(a["why"], f"{where}.why", ALERT_WHY_CHARS)
    _int(h["warnings_total"], f"{name}.warnings_total", 0, MAX_PACKETS)
    w = h["warnings"]
    if not isinstance(w, list) or len(w) > MAX_HEALTH_WARNINGS:
        _fail(f"{name}.warnings must be a list of at most {MAX_HEALTH_WARNINGS}")
    for i, item in enumerate(w):
        item = _dict(item, f"{name}.warnings[{i}]", {"time", "level", "message"})
        _num(item["time"], f"{name}.warnings[{i}].time", 0.0, 1e11)
        if item["level"] not in LEVELS:
            _fail(f"{name}.warnings[{i}].level must be one of {', '.join(LEVELS)}")
        _str(item["message"], f"{name}.warnings[{i}].message", MAX_WARNING_CHARS)


def _error(v: Any, exp: Expectations, p: dict[str, Any], name: str) -> None:
    if v is not None:
        _str(v, name, 4000)


# ------------------------------------------------------------------------------------------ definitions
def rule(check: Check, what: str, *, optional: bool = False, wire: str | None = None, tensors: bool = False,
         encode: Callable[[Any], Any] | None = None, decode: Callable[[Any], Any] | None = None) -> Any:
    """One field of a message, declared once: its check, a few words for the protocol table (`what`), and how its
    typed value goes to and comes from the wire. wire: its name on the wire when that differs from the attribute's;
    tensors: it carries the model's tensors (the wire admits tensors only in such messages)."""
    meta = {"check": check, "what": what, "optional": optional, "wire": wire, "tensors": tensors,
            "encode": encode, "decode": decode}
    return field(default=None, metadata=meta) if optional else field(metadata=meta)


@dataclass(frozen=True)
class Definition:
    """A message type as its class declares it: the wire's field names in check order, which are optional, and the
    class that is its typed form."""

    msg_type: str
    direction: str
    cls: type
    fields: tuple[Any, ...]  # dataclasses.Field, in check order

    @property
    def required(self) -> set[str]:
        return {wire_name(f) for f in self.fields if not f.metadata["optional"]}

    @property
    def optional(self) -> set[str]:
        return {wire_name(f) for f in self.fields if f.metadata["optional"]}

    @property
    def carries_tensors(self) -> bool:
        return any(f.metadata["tensors"] for f in self.fields)


def wire_name(f: Any) -> str:
    return f.metadata["wire"] or f.name


DEFINITIONS: dict[str, Definition] = {}


def message(msg_type: str, direction: str) -> Callable[[type], type]:
    """Register a message class (a frozen dataclass whose fields are `rule`s) as the one definition of `msg_type`:
    `validate` checks its fields, `to_fields` encodes it and `of` types it, all from those rules."""
    def register(cls: type) -> type:
        if msg_type in DEFINITIONS:
            raise ValueError(f"{msg_type} is defined twice")
        DEFINITIONS[msg_type] = Definition(msg_type, direction, cls, tuple(fields(cls)))
        cls.TYPE = msg_type  # type: ignore[attr-defined]
        return cls
    return register


class Typed:
    """The encoding and the typing of a message class, derived from its rules."""

    def to_fields(self) -> dict[str, Any]:
        """The message's wire fields (an optional field left None is left out)."""
        out: dict[str, Any] = {}
        for f in DEFINITIONS[self.TYPE].fields:  # type: ignore[attr-defined]
            value = getattr(self, f.name)
            if value is None and f.metadata["optional"]:
                continue
            out[wire_name(f)] = value if f.metadata["encode"] is None else f.metadata["encode"](value)
        return out

    @classmethod
    def of(cls, p: dict[str, Any]) -> Any:
        """The typed form of validated wire fields."""
        values = {}
        for f in DEFINITIONS[cls.TYPE].fields:  # type: ignore[attr-defined]
            value = p.get(wire_name(f))
            if value is not None and f.metadata["decode"] is not None:
                value = f.metadata["decode"](value)
            values[f.name] = value
        return cls(**values)


def _error_stats_fields(s: ErrorStats) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if s.window_hist is not None:
        extra["window_hist"] = {str(int(b)): int(c) for b, c in s.window_hist.items()}
    if s.rows_per_day is not None:
        extra["rows_per_day"] = float(s.rows_per_day)
    if s.tail_clusters is not None and s.tail_exceedances is not None:
        extra["tail_clusters"], extra["tail_exceedances"] = int(s.tail_clusters), int(s.tail_exceedances)
    return {"count": s.count, "total": s.total, "total_sq": s.total_sq, **extra}


def _error_stats_of(v: dict[str, Any]) -> ErrorStats:
    hist = v.get("window_hist")
    hist = None if hist is None else {int(b): c for b, c in hist.items()}
    return ErrorStats(v["count"], v["total"], v["total_sq"], hist,
                      v.get("rows_per_day"), v.get("tail_clusters"), v.get("tail_exceedances"))


ROUND = "the round it is about"


@message(C2S_HELLO, "client → server")
@dataclass(frozen=True)
class Hello(Typed):
    """HELLO: a client (re)joins with what it holds: training rows and their statistics, held-out row counts."""

    device: str = rule(_known("devices"), "the client's name")
    n_train: int = rule(_integer(1), "its training rows", decode=int)
    feature_stats: FeatureStats = rule(_feature_stats, "count, total, total_sq, minimum, maximum of its training rows",
                                       encode=FeatureStats.to_dict, decode=FeatureStats.from_dict)
    held_out: dict[str, Any] = rule(_held_out, "rows held out: validation, test, attacks {file: rows}")


@message(S2C_WELCOME, "server → client")
@dataclass(frozen=True)
class Welcome(Typed):
    """WELCOME: the server took a HELLO."""

    round: int = rule(_round, "the server's round")


@message(S2C_PING, "server → client")
@dataclass(frozen=True)
class Ping(Typed):
    """PING: "say hello if you are there" (to a board not connected)."""


@message(S2C_TRAIN, "server → client")
@dataclass(frozen=True)
class Train(Typed):
    """TRAIN: train the global model from these weights with this normaliser, each client with its own plan."""

    round: int = rule(_round, ROUND)
    model: dict[str, torch.Tensor] = rule(_state, "the global model's tensors", tensors=True)
    normalizer: dict[str, Any] = rule(_normalizer, "transform, method, offset, scale")
    clients: dict[str, Any] = rule(_addressed({"plan"}, _plan),
                                   "{client: {plan, scale (optional: its device's widened feature scales)}}")


@message(C2S_UPDATE, "client → server")
@dataclass(frozen=True)
class Update(Typed):
    """UPDATE: one client's trained weights for one round, the rows it claims and what training cost."""

    round: int = rule(_round, ROUND)
    client: str = rule(_known("clients"), "the client")
    model: dict[str, torch.Tensor] = rule(_state, "its trained tensors", tensors=True)
    n: int = rule(_integer(1), "the rows it trained on", decode=int)
    loss: float = rule(_number(0.0, MAX_VALUE), "its last epoch's mean loss", decode=float)
    lr: float = rule(_number(), "the learning rate it used", decode=float)
    train_seconds: float = rule(_number(0.0, MAX_SECONDS), "what training took", decode=float)


@message(S2C_EVAL_STATS, "server → client")
@dataclass(frozen=True)
class EvalStats(Typed):
    """EVAL_STATS: score your validation rows under this model and send their error statistics."""

    round: int = rule(_round, ROUND)
    model: dict[str, torch.Tensor] = rule(_state, "the evaluated model's tensors", tensors=True)
    normalizer: dict[str, Any] = rule(_normalizer, "as in TRAIN")
    clients: dict[str, Any] = rule(_addressed(set()), "{client: {scale (optional, as in TRAIN)}}")


@message(C2S_VAL_STATS, "client → server")
@dataclass(frozen=True)
class ValStats(Typed):
    """VAL_STATS: statistics of one client's validation errors under the evaluated model."""

    round: int = rule(_round, ROUND)
    client: str = rule(_known("clients"), "the client")
    stats: ErrorStats = rule(_val_stats, "count, total, total_sq; window_hist, rows_per_day, tail_clusters, "
                             "tail_exceedances", wire="val_stats", encode=_error_stats_fields, decode=_error_stats_of)


@message(S2C_EVAL_COUNTS, "server → client")
@dataclass(frozen=True)
class EvalCounts(Typed):
    """EVAL_COUNTS: count your held-out rows over these thresholds and report."""

    round: int = rule(_round, ROUND)
    clients: dict[str, Any] = rule(_addressed({"device_threshold"}, _device_threshold),
                                   "{client: {device_threshold (that client's own)}}")
    global_threshold: float = rule(_number(0.0, MAX_VALUE), "the global threshold")
    window: int = rule(_window, "the vote window (odd)")


@message(C2S_REPORT, "client → server")
@dataclass(frozen=True)
class Report(Typed):
    """REPORT: one client's count report (`evaluation.counts.client_report`; `report["device"]` is the client)."""

    round: int = rule(_round, ROUND)
    report: dict[str, Any] = rule(_report, "`evaluation.counts.client_report`; its device is the client's name")

    @property
    def client(self) -> str:
        return self.report["device"]


@message(S2C_FINISH, "server → client")
@dataclass(frozen=True)
class Finish(Typed):
    """FINISH: the run is over (with why, when it ended in an error or the board is quarantined)."""

    error: str | None = rule(_error, "why the run ended early", optional=True)


@message(C2S_HEALTH, "client → server")
@dataclass(frozen=True)
class Health(Typed):
    """HEALTH: what a board (or simulation worker rank) says about itself every `status_args.health_interval_s`:
    shown on the status page and in /metrics, never used for training or thresholds."""

    health: dict[str, Any] = rule(_health, "version, features_version, rss_mb, cpu_percent, disk_free_mb, uptime_s, "
                                  "last_round, detect (packets, packets_per_s, packet_alerts, window_alerts, "
                                  "model_round, alerts; or null), warnings_total, warnings ([{time, level, message}])")


def protocol_table() -> str:
    """The messages as a markdown table, made from their definitions (doc/architecture.md shows it; a test compares)."""
    lines = ["| message | direction | fields |", "|---|---|---|"]
    for d in DEFINITIONS.values():
        parts = [f"{wire_name(f)}{' (optional)' if f.metadata['optional'] else ''}: {f.metadata['what']}"
                 for f in d.fields]
        name = d.msg_type.removeprefix("fediot_").upper()
        lines.append(f"| {name} | {d.direction} | {'; '.join(parts) or '(none)'} |")
    return "\n".join(lines)


def tensors_allowed(msg_type: str) -> int | None:
    """How many tensors a message of this type may carry (the model's, for the types that carry it; none for the
    others); None for a type that is not a message."""
    if msg_type not in DEFINITIONS:
        return None
    return _model_tensors() if DEFINITIONS[msg_type].carries_tensors else 0


@functools.lru_cache(maxsize=1)
def _model_tensors() -> int:
    from model.autoencoder import AutoEncoder

    return len(AutoEncoder(N_FEATURES).state_dict())


def decode_message(raw: bytes, max_bytes: int) -> tuple[str, int, int, dict[str, Any]]:
    """Wire bytes as (type, sender, receiver, fields) within every limit a message has (size, header, tensors per
    type); `WireError` otherwise. Every receiver decodes through here."""
    return decode(raw, max_bytes, MAX_HEADER_BYTES, tensors_allowed)


def validate(msg_type: str, fields: dict[str, Any], exp: Expectations) -> None:
    """Raise ProtocolError unless `fields` is exactly what a `msg_type` message may hold: its definition's fields,
    each passing its check, in order."""
    if msg_type not in DEFINITIONS:
        _fail(f"unknown message type {msg_type!r}")
    d = DEFINITIONS[msg_type]
    required, optional = d.required, d.optional
    present = set(fields)
    if not required <= present or not present <= required | optional:
        missing, extra = sorted(required - present), sorted(map(str, present - required - optional))
        _fail(f"{msg_type}: " + "; ".join(x for x in (f"missing {missing}" if missing else "",
                                                      f"unexpected {extra[:10]}" if extra else "") if x))
    try:
        for f in d.fields:
            name = wire_name(f)
            if name in fields:
                f.metadata["check"](fields[name], exp, fields, name)
    except ProtocolError as exc:
        raise ProtocolError(f"{msg_type}: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, ArithmeticError) as exc:  # never crash on it
        raise ProtocolError(f"{msg_type}: malformed ({type(exc).__name__}: {exc})") from None


def own_normalizer(normalizer: dict[str, Any], scale: list[float] | None) -> dict[str, Any]:
    """The normaliser a client uses: the request's, with its device's widened scales (its `scale`) when it has them."""
    return normalizer if scale is None else {**normalizer, "scale": scale}


# ------------------------------------------------------------------------------------------ typed forms
@dataclass(frozen=True)
class RoundPlan:
    """What the server tells one client to do in one round; the client trains with exactly this."""

    round_idx: int
    lr: float
    epochs: int
    batch_size: int
    weight_decay: float
    seed: int
    prox_mu: float = 0.0  # FedProx's proximal weight (0: none)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "RoundPlan":
        """Rebuild a plan from a message, refusing anything that is not a plausible plan (`InputError`)."""
        if not isinstance(d, dict) or set(d) != {f for f in cls.__dataclass_fields__}:
            _fail(f"a round plan needs exactly the fields {sorted(cls.__dataclass_fields__)}")
        ints = ("round_idx", "epochs", "batch_size", "seed")
        if any(not isinstance(d[k], int) or isinstance(d[k], bool) or d[k] < 0 for k in ints) \
                or d["epochs"] < 1 or d["batch_size"] < 1:
            _fail(f"a round plan needs non-negative integers {ints} (epochs and batch size >= 1)")
        if any(not isinstance(d[k], (int, float)) or isinstance(d[k], bool) or not 0 <= d[k] < float("inf")
               for k in ("lr", "weight_decay", "prox_mu")) or d["lr"] <= 0:
            _fail("a round plan needs a finite lr > 0 and weight_decay and prox_mu >= 0")
        return cls(**d)


# the answer each server request waits for, and its typed form
ANSWER_TO = {S2C_TRAIN: C2S_UPDATE, S2C_EVAL_STATS: C2S_VAL_STATS, S2C_EVAL_COUNTS: C2S_REPORT}
# what a client sends the driver, typed
TYPED: dict[str, Any] = {t: DEFINITIONS[t].cls for t in (C2S_HELLO, *ANSWER_TO.values())}


@dataclass(frozen=True)
class ClientOrder:
    """What one client named in a request is told besides what all of them are told."""

    plan: RoundPlan | None = None  # TRAIN: its round's hyperparameters
    scale: list[float] | None = None  # TRAIN, EVAL_STATS: its device's widened feature scales, when it has them
    device_threshold: float | None = None  # EVAL_COUNTS: its own threshold


@dataclass(frozen=True)
class Request:
    """A server request a client answers (TRAIN, EVAL_STATS, EVAL_COUNTS) in its typed form, made from validated fields:
    what every client named is told, and each one's `ClientOrder`."""

    kind: str
    round: int
    clients: dict[str, ClientOrder]
    model: dict[str, torch.Tensor] | None = None  # TRAIN, EVAL_STATS
    normalizer: dict[str, Any] | None = None  # TRAIN, EVAL_STATS
    global_threshold: float | None = None  # EVAL_COUNTS
    window: int | None = None  # EVAL_COUNTS

    @classmethod
    def of(cls, kind: str, f: dict[str, Any]) -> "Request":
        if kind not in ANSWER_TO:
            raise ValueError(f"{kind} is not a request a client answers")
        orders = {c: ClientOrder(RoundPlan.from_dict(o["plan"]) if kind == S2C_TRAIN else None, o.get("scale"),
                                 None if o.get("device_threshold") is None else float(o["device_threshold"]))
                  for c, o in f["clients"].items()}
        if kind == S2C_EVAL_COUNTS:
            return cls(kind, int(f["round"]), orders, global_threshold=float(f["global_threshold"]), window=f["window"])
        return cls(kind, int(f["round"]), orders, model=f["model"], normalizer=f["normalizer"])


def answer_client(msg_type: str, fields: dict[str, Any]) -> str:
    """The client an answer is about (a validated UPDATE, VAL_STATS or REPORT)."""
    return fields["report"]["device"] if msg_type == C2S_REPORT else fields["client"]


def typed(msg_type: str, fields: dict[str, Any], exp: Expectations) -> Any:
    """A received client message, validated (`ProtocolError` otherwise) and in its typed form."""
    validate(msg_type, fields, exp)
    return TYPED[msg_type].of(fields)


class Receiver:
    """The receiving side of every grid, once: decode (the wire's limits) -> validate (the type's schema against what
    the receiver knows) -> typed form; what fails is refused through `refuse(sender, why)` (which logs and counts it)
    and the receiver goes on. The server node, the client node, the in-process grid and the Flower adapter receive
    through one of these; what a node adds (a strike towards quarantine) it does on a False / None."""

    def __init__(self, expect: Expectations, refuse: Callable[[str, str], None], max_bytes: int | None = None) -> None:
        """max_bytes: the size limit of `decoded` (None for a receiver whose transport decodes: a node's)."""
        self.expect = expect
        self.refuse = refuse
        self.max_bytes = max_bytes

    def decoded(self, raw: bytes, sender: str) -> tuple[str, int, int, dict[str, Any]] | None:
        """(type, sender rank, receiver rank, fields) of wire bytes, or None (refused) when they are not a message."""
        if self.max_bytes is None:
            raise ValueError("this Receiver validates only: its transport decodes")
        try:
            return decode_message(raw, self.max_bytes)
        except (WireError, ProtocolError) as exc:
            self.refuse(sender, str(exc))
            return None

    def valid(self, msg_type: str, fields: dict[str, Any], sender: str) -> bool:
        """Whether decoded `fields` are what a `msg_type` message may hold (refused when not)."""
        try:
            validate(msg_type, fields, self.expect)
        except ProtocolError as exc:
            self.refuse(sender, str(exc))
            return False
        return True

    def typed(self, raw: bytes, sender: str, expected: str | None = None) -> Any:
        """A client's message from its bytes: decoded, validated and typed (`TYPED`); None when refused (also when
        it is not of the `expected` type)."""
        got = self.decoded(raw, sender)
        if got is None or not self.valid(got[0], got[3], sender):
            return None
        if expected is not None and got[0] != expected:
            self.refuse(sender, f"{got[0]} where {expected} was expected")
            return None
        if got[0] not in TYPED:
            self.refuse(sender, f"{got[0]} is not a client's answer")
            return None
        return TYPED[got[0]].of(got[3])
