"""status_args: watching a run (the server's status page and /metrics, what boards report about themselves)."""
from __future__ import annotations

from dataclasses import dataclass

from fediot.settings import is_int, is_num, setting


@dataclass(frozen=True)
class StatusArgs:
    """Watching a run: the server's status page and /metrics, and what boards report about themselves."""

    port: int | None = setting(8765, "the server's status page, /api/status and /metrics on this port (0 = any free port, printed and kept in RUN_DIR/status.json); null = none; a port in use is a warning", check=(lambda v: v is None or (is_int(v) and 0 <= v <= 65535), 'null or a port 0..65535'))
    host: str = setting('127.0.0.1', 'the address the status server listens on: loopback by default; any other address (the LAN) needs token', check=(lambda v: isinstance(v, str) and len(v) > 0, 'an IP address'))
    token: str | None = setting(None, 'access token for the status server (Authorization: Bearer TOKEN, or ?token=TOKEN in a browser): when set, every request needs it; required when host is not loopback. At least 16 characters', check=(lambda v: v is None or (isinstance(v, str) and len(v) >= 16 and v.isprintable() and " " not in v), 'null or a printable string of >= 16 characters without spaces'))
    refresh_s: float = setting(2.0, 'how often the status page asks the server for news', check=(lambda v: is_num(v) and v >= 0.5, 'a number of seconds >= 0.5'))
    linger_watched_s: float = setting(600.0, 'when the status page was opened during the run, the server keeps it up this many seconds after the run ends (the final page, its report and figures; Ctrl-C ends the wait); 0 = not for that', check=(lambda v: is_num(v) and v >= 0, 'a number of seconds >= 0'))
    linger_s: float = setting(0.0, 'keep the status server up this many seconds after every run, watched or not (the longer of this and linger_watched_s applies)', check=(lambda v: is_num(v) and v >= 0, 'a number of seconds >= 0'))
    health_interval_s: float = setting(10.0, 'each board (or simulation worker) reports its health (versions, memory, CPU, disk, uptime, last round, its detector, recent warnings) this often; the server ignores reports that come faster than half of it', check=(lambda v: is_num(v) and v >= 1, 'a number of seconds >= 1'))
    health_warnings: int = setting(20, 'recent warnings/errors a health report carries at most (the count of the rest is exact), each cut to 300 characters', check=(lambda v: is_int(v) and 0 <= v <= 100, 'an integer 0..100'))
    keep_rounds: int = setting(1000, 'round records the status server keeps for the page (rounds.jsonl keeps them all)', check=(lambda v: is_int(v) and v >= 1, 'an integer >= 1'))
