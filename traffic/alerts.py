"""Where detect's alerts go besides its JSON lines: syslog (RFC 5424) and MQTT (Home Assistant discovery).

Packet processing never waits for a network sink: `AlertPublisher.offer` puts a message on a bounded queue (full:
dropped and counted) and one thread sends. What is sent is rate-limited per (watched device, source host) by
packet time (`RateLimiter`): the first alert of a pair goes out at once, later ones at most once per
`detect_args.alert_interval_s`, each carrying how many alerts it stands for. The JSON lines keep every alert.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import re
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from fediot.errors import FedIoTError

log = logging.getLogger(__name__)

SYSLOG_FACILITY_SECURITY = 4  # RFC 5424 facility 4: security/authorization messages
SYSLOG_WARNING, SYSLOG_NOTICE = 4, 5  # severities: an attack alert, a device back to normal
SYSLOG_ENTERPRISE_ID = 32473  # RFC 5612's example private enterprise number (structured data id fediot@32473)
APP_NAME = "fediot-detect"
SEND_TIMEOUT_S = 5.0  # a network sink that takes longer loses that message (counted), the next one is tried


@dataclass
class Alert:
    """One message for the network sinks: a watched device's state with the latest alert that set it."""

    device: str
    host: str
    time: float
    score: float
    threshold: float
    alerts: int  # alerts this message stands for (since the previous message of the same device and host)
    state: str = "ON"  # "OFF": the device has had no alert for alert_interval_s
    why: str = ""  # what the score came from, for the first alert of an episode (detect.explain)


class RateLimiter:
    """At most one message per (device, host) per `interval_s` of packet time; the pairs remembered are bounded
    (least recently alerted forgotten)."""

    def __init__(self, interval_s: float, max_pairs: int) -> None:
        self.interval_s, self.max_pairs = interval_s, max_pairs
        self.last: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()  # pair -> (last sent, held back)

    def admit(self, device: str, host: str, t: float) -> int | None:
        """How many alerts a message now would stand for, or None when it must wait."""
        key = (device, host)
        sent, held = self.last.get(key, (None, 0))
        if sent is not None and t - sent < self.interval_s:
            self.last[key] = (sent, held + 1)
            self.last.move_to_end(key)
            return None
        self.last[key] = (t, 0)
        self.last.move_to_end(key)
        while len(self.last) > self.max_pairs:
            self.last.popitem(last=False)
        return held + 1


class Sink(Protocol):
    def send(self, alert: Alert) -> None: ...
    def close(self) -> None: ...


def rfc5424(alert: Alert, hostname: str, now: float | None = None) -> bytes:
    """One RFC 5424 syslog message: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG (MSG in UTF-8 with BOM)."""
    severity = SYSLOG_WARNING if alert.state == "ON" else SYSLOG_NOTICE
    stamp = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc).isoformat(timespec="milliseconds")
    stamp = stamp.replace("+00:00", "Z")

    def param(v: Any) -> str:  # RFC 5424 6.3.3: escape ", \ and ]
        return re.sub(r'(["\\\]])', r"\\\1", str(v))

    sd = (f'[fediot@{SYSLOG_ENTERPRISE_ID} device="{param(alert.device)}" host="{param(alert.host)}" '
          f'score="{alert.score:.6g}" threshold="{alert.threshold:.6g}" alerts="{alert.alerts}" '
          f'packet_time="{alert.time:.6f}"]')
    text = (f"attack suspected on {alert.device}: traffic of {alert.host} scored {alert.score:.4g} over threshold "
            f"{alert.threshold:.4g} ({alert.alerts} alert(s))" + (f"; mostly {alert.why}" if alert.why else "")
            if alert.state == "ON"
            else f"{alert.device}: no alert for a while, back to normal")
    header = (f"<{SYSLOG_FACILITY_SECURITY * 8 + severity}>1 {stamp} {_token(hostname, 255)} {APP_NAME} {os.getpid()} "
              f"{'ALERT' if alert.state == 'ON' else 'CLEAR'} {sd} ")
    return header.encode("ascii", "replace") + b"\xef\xbb\xbf" + text.encode("utf-8")


def _token(s: str, limit: int) -> str:
    """A syslog header field: printable ASCII without spaces, '-' when empty."""
    s = "".join(c for c in s if 33 <= ord(c) <= 126)[:limit]
    return s or "-"


class SyslogSink:
    """RFC 5424 over UDP (one message per datagram, RFC 5426), TCP (octet counting, RFC 6587) or a Unix socket."""

    def __init__(self, url: str, hostname: str) -> None:
        self.url, self.hostname = url, hostname
        scheme, _, rest = url.partition("://")
        self.scheme = scheme
        if scheme == "unix":
            self.address: Any = rest
        else:
            host, _, port = rest.rpartition(":")
            if not host or not port.isdigit():
                raise FedIoTError(f"detect_args.syslog: {url!r} is not {scheme}://HOST:PORT")
            self.address = (host.strip("[]"), int(port))
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self.scheme == "unix":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.connect(self.address)
        elif self.scheme == "udp":
            family = socket.getaddrinfo(*self.address, type=socket.SOCK_DGRAM)[0][0]
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.connect(self.address)
        else:
            s = socket.create_connection(self.address, timeout=SEND_TIMEOUT_S)
        s.settimeout(SEND_TIMEOUT_S)
        return s

    def send(self, alert: Alert) -> None:
        msg = rfc5424(alert, self.hostname)
        if self.scheme == "tcp":
            msg = str(len(msg)).encode() + b" " + msg
        for attempt in (1, 2):  # a TCP collector that restarted: one reconnect
            try:
                if self.sock is None:
                    self.sock = self._connect()
                self.sock.sendall(msg) if self.scheme == "tcp" else self.sock.send(msg)
                return
            except OSError:
                self.close()
                if attempt == 2:
                    raise

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", s)


class MqttSink:
    """Alerts to an MQTT broker, following Home Assistant's MQTT discovery: one binary sensor (device class
    `safety`: ON = unsafe) per watched device, announced retained at <discovery>/binary_sensor/<id>/config, its
    state (retained ON/OFF) at <prefix>/<board>/<device>/state, the latest alert as JSON attributes at
    <prefix>/<board>/<device>/alert, and the board's availability (online; offline as its last will) at
    <prefix>/<board>/status."""

    def __init__(self, broker: str, board: str, devices: list[str], topic_prefix: str, discovery_prefix: str,
                 max_queued: int, username: str | None = None, password_file: str | None = None) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise FedIoTError("detect_args.mqtt_broker is set but paho-mqtt is not installed (pip install paho-mqtt)") from None
        host, _, port = broker.rpartition(":")
        self.board = _slug(board)
        self.base = f"{topic_prefix}/{self.board}"
        self.availability = f"{self.base}/status"
        kwargs: dict[str, Any] = {"client_id": f"fediot-detect-{self.board}-{os.getpid()}"}
        if hasattr(mqtt, "CallbackAPIVersion"):  # paho-mqtt 2.x
            kwargs["callback_api_version"] = mqtt.CallbackAPIVersion.VERSION2
        self.client = mqtt.Client(**kwargs)
        self.client.max_queued_messages_set(max_queued)
        if username is not None:
            password = Path(password_file).read_text().strip() if password_file else None
            self.client.username_pw_set(username, password)
        self.client.will_set(self.availability, "offline", qos=1, retain=True)
        try:
            self.client.connect(host.strip("[]"), int(port), keepalive=60)
        except OSError as exc:
            raise FedIoTError(f"detect_args.mqtt_broker: cannot reach {broker} ({exc})") from None
        self.client.loop_start()  # paho's own thread: network I/O and reconnects
        self.client.publish(self.availability, "online", qos=1, retain=True)
        self.states: dict[str, str] = {}
        for device in devices:
            self.client.publish(*self.discovery(device, discovery_prefix), qos=1, retain=True)
            self.client.publish(self.topic(device, "state"), "OFF", qos=1, retain=True)
            self.states[device] = "OFF"

    def topic(self, device: str, leaf: str) -> str:
        return f"{self.base}/{_slug(device)}/{leaf}"

    def discovery(self, device: str, discovery_prefix: str) -> tuple[str, str]:
        """(config topic, payload) announcing the device's binary sensor to Home Assistant."""
        uid = f"fediot_{self.board}_{_slug(device)}"
        payload = {
            "name": "Attack", "unique_id": uid, "object_id": uid, "device_class": "safety",
            "state_topic": self.topic(device, "state"), "payload_on": "ON", "payload_off": "OFF",
            "json_attributes_topic": self.topic(device, "alert"),
            "availability_topic": self.availability, "payload_available": "online", "payload_not_available": "offline",
            "device": {"identifiers": [uid], "name": f"{device} (FedIoT on {self.board})", "manufacturer": "FedIoT",
                       "model": "autoencoder anomaly detector"},
        }
        return f"{discovery_prefix}/binary_sensor/{uid}/config", json.dumps(payload)

    def send(self, alert: Alert) -> None:
        """Publish (paho queues while the broker is away, at most max_queued messages; beyond that: an error)."""
        if alert.state == "ON":
            self._check(self.client.publish(self.topic(alert.device, "alert"), json.dumps({
                "host": alert.host, "packet_time": alert.time, "score": alert.score, "threshold": alert.threshold,
                "alerts": alert.alerts, **({"why": alert.why} if alert.why else {})}), qos=1))
        if self.states.get(alert.device) != alert.state:  # the retained state changes only when it changes
            self._check(self.client.publish(self.topic(alert.device, "state"), alert.state, qos=1, retain=True))
            self.states[alert.device] = alert.state

    @staticmethod
    def _check(info: Any) -> None:
        if info.rc not in (0, 4):  # MQTT_ERR_SUCCESS, MQTT_ERR_NO_CONN (queued until reconnected)
            raise OSError(f"MQTT publish failed (paho rc {info.rc})")

    def close(self) -> None:
        info = self.client.publish(self.availability, "offline", qos=1, retain=True)
        try:
            info.wait_for_publish(SEND_TIMEOUT_S)
        except (RuntimeError, ValueError):  # not connected: the broker sends the last will instead
            pass
        self.client.loop_stop()
        self.client.disconnect()


class AlertPublisher:
    """A bounded queue and one thread that hands each message to every sink; `offer` never blocks."""

    def __init__(self, sinks: list[Sink], capacity: int) -> None:
        self.sinks = sinks
        self.q: queue.Queue[Alert | None] = queue.Queue(maxsize=capacity)
        self.counts = {"queued": 0, "sent": 0, "dropped_queue_full": 0, "failed": 0}
        self.thread = threading.Thread(target=self._run, name="alert-publisher", daemon=True)
        self.thread.start()

    def offer(self, alert: Alert) -> bool:
        try:
            self.q.put_nowait(alert)
        except queue.Full:
            self.counts["dropped_queue_full"] += 1
            return False
        self.counts["queued"] += 1
        return True

    def _run(self) -> None:
        while True:
            alert = self.q.get()
            if alert is None:
                return
            for sink in self.sinks:
                try:
                    sink.send(alert)
                    self.counts["sent"] += 1
                except Exception as exc:  # noqa: BLE001 - a sink failing must not stop the others or detection
                    self.counts["failed"] += 1
                    log.warning("alert to %s failed: %s", type(sink).__name__, exc)

    def close(self, timeout_s: float = SEND_TIMEOUT_S) -> None:
        """Send what is queued (bounded wait), then close the sinks."""
        try:
            self.q.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self.thread.join(timeout_s)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing %s: %s", type(sink).__name__, exc)
