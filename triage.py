"""Triage detect's alerts: list the alert episodes, mute a device or a remote host, say "this was benign".

    python -m triage list    [--triage FILE]
    python -m triage mute    [--device NAME] [--remote IP] [--hours H] [--reason TEXT] [--triage FILE]
    python -m triage unmute  ID [--triage FILE]
    python -m triage benign  EPISODE [--data DIR] [--reason TEXT] [--triage FILE] [--config YAML]

FILE (default data/local/triage.json) is what `detect --triage FILE` reads (and re-reads when it changes); detect
keeps each alert episode's rows and remote hosts in FILE's directory, under evidence/ (traffic/triage.py).
- list: each episode: its id, device, when, how many window alerts, the remote hosts, why, whether it was muted
  and whether a verdict was given; then the mutes in force.
- mute: alerts of the device (any remote), of the remote host (any device), or of both, for H hours (default: until
  unmuted): still in detect's alert lines, marked "muted", but not on syslog or MQTT.
- benign: the episode's kept rows join the device's benign training rows (DIR/DEVICE/benign_verdicts/EPISODE.csv,
  recorded in its provenance.json): the next federation learns them. At most detect_args.evidence_rows rows a
  verdict, and all verdicts of a device at most detect_args.benign_verdict_share of its captured rows; the device
  and the episode's main remote are muted detect_args.benign_mute_h hours meanwhile. A verdict whose rows look like
  one of the device's simulated attacks (detect_args.verdict_attack_share) is refused unless --force.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from data import nbaiot
from data.csvfile import write_feature_csv
from data.loader import PROVENANCE_FILE, SIMULATED_ATTACKS_DIR, VERDICTS_DIR, read_feature_csv
from fediot.config import DEVICE_NAME, load, validate
from traffic.settings import DetectArgs
from fediot.errors import DataError, FedIoTError
from traffic.triage import EPISODE_ID, EVIDENCE_DIR, Triage, attack_likeness, verdict_rows, verdict_rows_allowed

DEFAULT_TRIAGE = Path("data/local/triage.json")


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def episodes(triage_file: Path) -> list[dict[str, Any]]:
    """The episode summaries detect wrote beside the triage file, oldest first (unreadable ones skipped, said)."""
    out = []
    for f in sorted((triage_file.parent / EVIDENCE_DIR).glob("*.json")):
        try:
            e = json.loads(f.read_text())
            if isinstance(e, dict) and EPISODE_ID.fullmatch(str(e.get("episode", ""))):
                out.append(e)
        except (OSError, ValueError):
            print(f"note: {f} is not an episode summary: skipped", file=sys.stderr)
    return sorted(out, key=lambda e: e.get("first", 0.0))


def list_triage(triage_file: Path, cfg: DetectArgs) -> int:
    tri = Triage.load(triage_file, cfg.max_triage_entries)
    given = {v.get("episode") for v in tri.verdicts}
    eps = episodes(triage_file)
    if not eps:
        print(f"no alert episode kept in {triage_file.parent / EVIDENCE_DIR} (detect --triage {triage_file} keeps them)")
    for e in eps:
        remotes = ", ".join(f"{r['host']} ({r['window_alerts']})" for r in e.get("remotes", [])[:3])
        flags = (" [muted " + e["muted"] + "]" if e.get("muted") else "") + (" [benign]" if e["episode"] in given else "")
        print(f"{e['episode']}  {e['device']}  {_when(e['first'])}  {e['window_alerts']} window alerts, "
              f"{e['rows']} rows kept; remote: {remotes or '-'}{flags}")
        if e.get("why"):
            print(f"    why: {e['why']}")
    now = time.time()
    live = [m for m in tri.mutes if m.until is None or m.until > now]
    for m in live:
        print(f"mute {m.id}: device {m.device or 'any'}, remote {m.remote or 'any'}, "
              f"{'until unmuted' if m.until is None else 'until ' + _when(m.until)}"
              + (f" ({m.reason})" if m.reason else ""))
    return 0


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _rows_in(csv: Path) -> int:
    with csv.open("rb") as fh:
        return max(0, sum(1 for _ in fh) - 1)


def refuse_attack_like(rows, ddir: Path, device: str, cfg: DetectArgs) -> None:
    """FedIoTError when the verdict's rows look like one of the device's simulated attacks (traffic.triage
    .attack_likeness above detect_args.verdict_attack_share): one click must not teach the model an attack."""
    attacks = {}
    for f in sorted((ddir / SIMULATED_ATTACKS_DIR).glob("*.csv")):
        try:
            attacks[f.stem] = read_feature_csv(f, nbaiot.CAPTURED_COLUMNS)
        except DataError as exc:
            raise FedIoTError(str(exc)) from None
    if not attacks:
        print(f"note: {device} has no simulated attack rows (capture --simulate-attacks): the verdict's rows cannot be "
              "compared with known attacks", file=sys.stderr)
        return
    try:
        benign_rows = read_feature_csv(ddir / nbaiot.BENIGN_FILE, nbaiot.CAPTURED_COLUMNS)
    except DataError as exc:
        raise FedIoTError(str(exc)) from None
    likeness = attack_likeness(rows, benign_rows, attacks, cfg.verdict_attack_ratio)
    name, share = max(likeness.items(), key=lambda kv: kv[1])
    if share > cfg.verdict_attack_share:
        raise FedIoTError(f"not taken: {share:.0%} of this episode's rows look like {name} (at least "
                          f"{cfg.verdict_attack_ratio:g}x nearer to its rows than to any of {device}'s own traffic; "
                          f"detect_args.verdict_attack_share {cfg.verdict_attack_share:g}). If you are sure it was you, "
                          "--force; a mute (python -m triage mute) silences it without teaching the model")


def benign(triage_file: Path, episode: str, data_dir: Path, reason: str, cfg: DetectArgs, force: bool = False) -> int:
    """The verdict: rows copied into the device's benign_verdicts, provenance and the triage file updated, a mute."""
    if not EPISODE_ID.fullmatch(episode):
        raise FedIoTError(f"{episode!r} is not an episode id (python -m triage list shows them: DEVICE-<digits>)")
    tri = Triage.load(triage_file, cfg.max_triage_entries)
    if any(v.get("episode") == episode for v in tri.verdicts):
        raise FedIoTError(f"{episode}: a benign verdict was already given")
    evidence = triage_file.parent / EVIDENCE_DIR
    summary_path, rows_path = evidence / f"{episode}.json", evidence / f"{episode}.csv"
    if not summary_path.is_file() or not rows_path.is_file():
        raise FedIoTError(f"{episode}: no kept rows in {evidence} (detect --triage {triage_file} keeps an episode's "
                          "rows when it ends)")
    summary = json.loads(summary_path.read_text())
    device = str(summary.get("device", ""))
    if not DEVICE_NAME.fullmatch(device):
        raise FedIoTError(f"{summary_path}: device {device!r} is not a device name")
    ddir = data_dir / device
    if not (ddir / nbaiot.BENIGN_FILE).is_file():
        raise FedIoTError(f"{ddir / nbaiot.BENIGN_FILE}: not found: a benign verdict joins the rows python -m capture "
                          f"wrote for {device} (--data names where they are)")
    try:
        rows = read_feature_csv(rows_path, nbaiot.CAPTURED_COLUMNS)[:cfg.evidence_rows]
    except DataError as exc:
        raise FedIoTError(str(exc)) from None
    if not force:
        refuse_attack_like(rows, ddir, device, cfg)
    prov_path = ddir / PROVENANCE_FILE
    provenance = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    benign_rows = int(provenance.get("rows") or _rows_in(ddir / nbaiot.BENIGN_FILE))
    vdir = ddir / VERDICTS_DIR
    held = sum(_rows_in(f) for f in vdir.glob("*.csv")) if vdir.is_dir() else 0
    allowed = verdict_rows_allowed(benign_rows, cfg.benign_verdict_share)
    room = allowed - held
    if room <= 0:
        raise FedIoTError(f"{device}: its benign verdicts hold {held:,} rows, all that detect_args.benign_verdict_share "
                          f"({cfg.benign_verdict_share:g} of its {benign_rows:,} captured rows) allows; capture more of "
                          "its traffic (capture --append) to make room")
    kept = verdict_rows(rows, room)
    vdir.mkdir(parents=True, exist_ok=True)
    tmp = vdir / f".{episode}.csv.tmp"
    write_feature_csv(str(tmp), kept, nbaiot.CAPTURED_COLUMNS)
    os.replace(tmp, vdir / f"{episode}.csv")
    now = time.time()
    record = {"episode": episode, "rows": int(len(kept)), "added": now, "reason": reason,
              "first": summary.get("first"), "remotes": [r.get("host") for r in summary.get("remotes", [])][:4]}
    if provenance:
        provenance.setdefault("benign_verdicts", []).append(record)
        _atomic_write(prov_path, json.dumps(provenance, indent=1) + "\n")
    tri.verdicts.append({"device": device, **record})
    top = (summary.get("remotes") or [{}])[0].get("host")
    # the device with that remote only (an episode without a remote mutes nothing: never a whole device for hours)
    mute = tri.mute(device, top, cfg.benign_mute_h, f"benign verdict on {episode}", now) \
        if cfg.benign_mute_h > 0 and top else None
    tri.save(triage_file)
    cut = f" (cut from {len(rows):,}: detect_args.benign_verdict_share)" if len(kept) < len(rows) else ""
    print(f"{episode}: {len(kept):,} rows{cut} join {device}'s benign training rows ({held + len(kept):,} of "
          f"{allowed:,} allowed); the next federation learns them"
          + (f"; {device} and {top or 'any remote'} muted {cfg.benign_mute_h:g} h ({mute.id})" if mute else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("list", "mute", "unmute", "benign"))
    p.add_argument("target", nargs="?", help="unmute: the mute's id; benign: the episode's id")
    p.add_argument("--triage", type=Path, default=DEFAULT_TRIAGE, help="the triage file (default %(default)s)")
    p.add_argument("--device", help="mute: the device (default: any)")
    p.add_argument("--remote", help="mute: the remote host's IP (default: any)")
    p.add_argument("--hours", type=float, help="mute: for this many hours (default: until unmuted)")
    p.add_argument("--reason", default="", help="a note kept with the mute or verdict")
    p.add_argument("--data", type=Path, default=Path("data/local"), help="benign: capture's --out (default %(default)s)")
    p.add_argument("--config", type=Path, help="YAML whose detect_args bound verdicts (default: defaults)")
    p.add_argument("--force", action="store_true",
                   help="benign: take the verdict although its rows look like a simulated attack")
    a = p.parse_args(argv)
    try:
        cfg = (load(a.config) if a.config else validate({})).detect
        if a.action == "list":
            return list_triage(a.triage, cfg)
        if a.action == "benign":
            if not a.target:
                raise FedIoTError("benign needs the episode's id (python -m triage list shows them)")
            return benign(a.triage, a.target, a.data, a.reason, cfg, a.force)
        tri = Triage.load(a.triage, cfg.max_triage_entries)
        if a.action == "mute":
            if a.hours is not None and not (a.hours > 0):
                raise FedIoTError("--hours must be > 0")
            if len(tri.mutes) + len(tri.verdicts) >= cfg.max_triage_entries:
                raise FedIoTError(f"{a.triage} holds {cfg.max_triage_entries} entries (detect_args.max_triage_entries): "
                                  "unmute old ones first")
            m = tri.mute(a.device, a.remote, a.hours, a.reason)
            tri.save(a.triage)
            print(f"mute {m.id}: device {m.device or 'any'}, remote {m.remote or 'any'}, "
                  f"{'until unmuted' if m.until is None else 'until ' + _when(m.until)}")
            return 0
        if not a.target or all(m.id != a.target for m in tri.mutes):
            raise FedIoTError(f"unmute: no mute {a.target!r} in {a.triage} (python -m triage list shows them)")
        tri.mutes = [m for m in tri.mutes if m.id != a.target]
        tri.save(a.triage)
        print(f"mute {a.target} removed")
        return 0
    except FedIoTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
