"""detect_args: a board's runtime (python -m detect, capture, triage, relay): bounded memory, following the
federation, where alerts go, early warning."""
from __future__ import annotations

from dataclasses import dataclass

from fediot.settings import is_int, is_num, setting


@dataclass(frozen=True)
class DetectArgs:
    """`python -m detect` on a board: bounded memory, following the federation, where alerts go."""

    max_streams: int = setting(5000, 'streams tracked per kind (MI, H, HH, HpHp); over it the least recently seen are forgotten, so a flood of new sockets cannot exhaust memory', check=(lambda v: is_int(v) and v >= 100, 'an integer >= 100'))
    idle_weight: float = setting(1e-6, 'a stream whose weight, decayed at the slowest lambda (0.01), is below this is forgotten (one packet: after ~2,000 s of silence); its features would differ from a new stream\'s by less than this fraction', check=(lambda v: is_num(v) and 0 < v < 1, 'a number between 0 and 1'))
    fanout_warmup_s: float = setting(60.0, "the fan-out extension counts no new peer or socket pair in the extractor's first this many seconds (a fresh extractor has seen none of a device's usual peers)", check=(lambda v: is_num(v) and v >= 0, 'a number >= 0'))
    state_every_s: float = setting(60.0, "detect --state: how often the extractor's memory of every stream is written (and at the end); a restart loses at most this long of it", check=(lambda v: is_num(v) and v > 0, 'a number > 0'))
    ephemeral_port_from: int = setting(32768, "endpoint profiles key a packet by the service's port: the other side's unless it is at or above this (an ephemeral port), then the device's own", check=(lambda v: is_int(v) and 1024 <= v <= 65535, 'an integer in 1024..65535'))
    silence_factor: float = setting(2.0, 'detect --profiles: a watched device silent for this many times its longest silence in its capture is a silent alert', check=(lambda v: is_num(v) and v >= 1, 'a number >= 1'))
    attack_rows_kept: int = setting(2000, "capture --simulate-attacks: rows kept of each simulated attack, in 4 contiguous blocks spread over its seconds; 0 = all (why 2000: doc/config.md)", check=(lambda v: is_int(v) and v >= 0, 'an integer >= 0'))
    evidence_rows: int = setting(500, "detect --triage: rows kept of an alert episode (its window-alerting packets' features) for a benign verdict; also the most one verdict adds to a device's benign rows", check=(lambda v: is_int(v) and 1 <= v <= 100000, 'an integer 1..100000'))
    benign_verdict_share: float = setting(0.02, "python -m triage benign: all benign verdicts of a device add at most this share of its captured benign rows (a LAN attacker who gets one click cannot outweigh the device's own traffic; doc/benchmarks.md 'Triage')", check=(lambda v: is_num(v) and 0 <= v <= 0.2, 'a number 0..0.2'))
    verdict_attack_share: float = setting(0.5, "python -m triage benign: refused when more than this share of the rows are like one of the device's simulated attacks (detect_args.verdict_attack_ratio; --force overrides)", check=(lambda v: is_num(v) and 0 < v <= 1, 'a number in (0, 1]'))
    verdict_attack_ratio: float = setting(2.0, "python -m triage benign: a row is like an attack when it is at least this many times nearer to the attack's rows than to any of the device's own (an update is merely nearer to a flood than to the device: doc/benchmarks.md 'Triage')", check=(lambda v: is_num(v) and v >= 1, 'a number >= 1'))
    benign_mute_h: float = setting(24.0, "python -m triage benign: the episode's device and remote are muted this many hours, until a federation has learnt the verdict's rows", check=(lambda v: is_num(v) and v >= 0, 'a number of hours >= 0'))
    max_triage_entries: int = setting(1000, "a triage file with more mutes and verdicts than this is refused (detect keeps the mutes it read before)", check=(lambda v: is_int(v) and v >= 1, 'an integer >= 1'))
    warn_relay_port: int = setting(8899, "early warning (issue 37): the relay's port (python -m relay beside the server; detect --relay HOST:PORT)", check=(lambda v: is_int(v) and 1 <= v <= 65535, 'a port 1..65535'))
    warn_confirm_boards: int = setting(2, "early warning: an endpoint is confirmed when this many boards' own detectors named it; until then it is a warning (one lying board cannot confirm)", check=(lambda v: is_int(v) and v >= 2, 'an integer >= 2'))
    warn_confirm_windows: int = setting(50, "early warning: a board is sure of an endpoint (its indicator may confirm it) after this many of its own window alerts on it ...", check=(lambda v: is_int(v) and v >= 1, 'an integer >= 1'))
    warn_confirm_share: float = setting(0.9, "... while they are at least this share of the endpoint's packets since the first (a passing false alarm on a busy endpoint is not sure)", check=(lambda v: is_num(v) and 0 <= v <= 1, 'a number in [0, 1]'))
    warn_ttl_s: float = setting(3600.0, "early warning: how long an indicator is kept (relay and boards) and an endpoint is not relayed again with the same status", check=(lambda v: is_num(v) and v > 0, 'a number of seconds > 0'))
    warn_rate_per_min: float = setting(6.0, "early warning: indicators a board may send a minute (beyond warn_burst in a row); more are refused and counted: a liar names at most warn_burst + this many endpoints a minute", check=(lambda v: is_num(v) and v > 0, 'a number > 0'))
    warn_burst: int = setting(10, "early warning: indicators a board may send in a row", check=(lambda v: is_int(v) and v >= 1, 'an integer >= 1'))
    warn_share_private: bool = setting(False, "early warning: relay indicators of private, loopback and link-local addresses too (boards of one LAN); off: only public endpoints cross households", check=(lambda v: isinstance(v, bool), 'true or false'))
    warn_max_indicators: int = setting(1024, "early warning: endpoints the relay remembers and a board keeps (least recent forgotten)", check=(lambda v: is_int(v) and v >= 1, 'an integer >= 1'))
    warn_confirm_s: float = setting(60.0, "early warning: a board's own detector has this long (packet time) after its early warning to confirm it; else the warning is cleared (a line says so)", check=(lambda v: is_num(v) and v > 0, 'a number of seconds > 0'))
    warn_log_per_minute: int = setting(10, "early warning: log lines a minute per board for refused indicators (the rest counted)", check=(lambda v: is_int(v) and v >= 1, 'an integer >= 1'))
    live_max_wait_ms: float = setting(5.0, 'detect --interface: a batch of live packets is scored at most this long after its first packet was read (or when full; a packet of an endpoint another board indicated ends its batch at once)', check=(lambda v: is_num(v) and 0 < v <= 1000, 'a number of milliseconds in (0, 1000]'))
    silence_min_s: float = setting(600.0, "detect --profiles: the shortest silence that is an alert, whatever the device's capture held", check=(lambda v: is_num(v) and v > 0, 'a number of seconds > 0'))
    max_profile_endpoints: int = setting(4096, "detect --profiles: an endpoints.json with more endpoints than this is refused before it is parsed (why 4096: doc/config.md)", check=(lambda v: is_int(v) and v >= 1, 'an integer >= 1'))
    max_hosts: int = setting(4096, 'source hosts whose majority-vote window (and formatted address) is kept; over it the least recently seen are forgotten (their window starts again)', check=(lambda v: is_int(v) and v >= 16, 'an integer >= 16'))
    batch_packets: int = setting(1024, 'packets read from a pcap per batch (live capture: up to 256 per second); larger batches are a little faster and hold more memory', check=(lambda v: is_int(v) and 1 <= v <= 65536, 'an integer in 1..65536'))
    capture_ring_mb: float = setting(4.0, 'live capture: megabytes of the kernel ring packets wait in while the reader is busy (2 KiB a packet); beyond it the kernel drops packets', check=(lambda v: is_num(v) and 0.0625 <= v <= 1024, 'a number of megabytes in 0.0625..1024'))
    min_capture_s: float = setting(3600.0, "capture warns when a device's captures add up to less than this many seconds of its traffic", check=(lambda v: is_num(v) and v >= 0, 'a number of seconds >= 0'))
    metrics_port: int | None = setting(None, 'detect serves Prometheus /metrics on this port (0 = any free port; --metrics-port overrides), with the status server\'s access rules (status_args.host, status_args.token); null = off', check=(lambda v: v is None or (is_int(v) and 0 <= v <= 65535), 'null or a port 0..65535'))
    status_every_s: float = setting(5.0, 'detect --follow refreshes RUN_DIR/detect_status.json (its packets/s and alert counts, which the board reports to the server) and its packets/s for /metrics this often', check=(lambda v: is_num(v) and v > 0, 'a number of seconds > 0'))
    follow_poll_s: float = setting(2.0, 'detect --follow: how often to look for a newer model from the federation', check=(lambda v: is_num(v) and v > 0, 'a number of seconds > 0'))
    explain_remotes: int = setting(16, 'an alert episode explains its first window alert and the first of each other remote endpoint in it, up to this many endpoints (each costs a forward pass)', check=(lambda v: is_int(v) and v >= 1, 'an integer >= 1'))
    alert_interval_s: float = setting(30.0, 'syslog and MQTT: at most one alert message per host and watched device per this many seconds (the JSON lines keep every alert)', check=(lambda v: is_num(v) and v >= 0, 'a number of seconds >= 0'))
    alert_queue: int = setting(1000, 'syslog/MQTT messages waiting to be sent; beyond it new ones are dropped and counted: packet processing never waits for a network sink', check=(lambda v: is_int(v) and v >= 1, 'an integer >= 1'))
    syslog: str | None = setting(None, 'send alerts as RFC 5424 syslog messages to udp://HOST:PORT, tcp://HOST:PORT (octet-counted framing, RFC 6587) or unix:///dev/log; null = off', check=(lambda v: v is None or (isinstance(v, str) and v.split("://")[0] in ("udp", "tcp", "unix") and "://" in v), 'null or udp://HOST:PORT, tcp://HOST:PORT, unix://PATH'))
    mqtt_broker: str | None = setting(None, 'send alerts to this MQTT broker (HOST:PORT) with Home Assistant MQTT discovery: one binary sensor per watched device; null = off', check=(lambda v: v is None or (isinstance(v, str) and v.rpartition(":")[2].isdigit() and v.rpartition(":")[0] != ""), 'null or HOST:PORT'))
    mqtt_topic_prefix: str = setting('fediot', 'MQTT: state and alert topics are PREFIX/<board>/<device>/...', check=(lambda v: isinstance(v, str) and v != "" and not set(v) & set("#+"), 'a topic level without # or +'))
    mqtt_discovery_prefix: str = setting('homeassistant', "MQTT: Home Assistant's discovery prefix (its default)", check=(lambda v: isinstance(v, str) and v != "" and not set(v) & set("#+"), 'a topic level without # or +'))
    mqtt_username: str | None = setting(None, 'MQTT: user name (null = anonymous)', check=(lambda v: v is None or isinstance(v, str), 'null or a string'))
    mqtt_password_file: str | None = setting(None, 'MQTT: file holding the password (never the password itself in a config)', check=(lambda v: v is None or isinstance(v, str), 'null or a path'))
