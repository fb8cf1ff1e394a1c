"""Read packets (pcap, pcapng, live AF_PACKET capture) into the fields the feature extractor needs.

Non-IP frames (ARP, ...), truncated frames and frames that do not parse are skipped and counted;
a file that is not a capture at all gives one clear error.
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import dpkt

from fediot.errors import DataError


@dataclass
class PacketBatch:
    """Parallel lists of per-packet fields (IPv4/IPv6 only)."""

    time: list[float] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    src_mac: list[bytes] = field(default_factory=list)
    src_ip: list[bytes] = field(default_factory=list)
    dst_ip: list[bytes] = field(default_factory=list)
    src_port: list[int] = field(default_factory=list)
    dst_port: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.time)


@dataclass
class SkipCounts:
    non_ip: int = 0
    truncated: int = 0
    malformed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"non_ip": self.non_ip, "truncated": self.truncated, "malformed": self.malformed}


_ETH_IPV4 = b"\x08\x00"


def parse_frame(ts: float, buf: bytes, wire_len: int, batch: PacketBatch, skipped: SkipCounts) -> None:
    """Append one Ethernet frame to `batch`, or count why it was skipped.

    Untagged IPv4 (almost all IoT traffic) is decoded by hand with byte slicing, several times faster
    than building dpkt objects; everything else (IPv6, VLAN tags, ...) goes through dpkt.
    """
    if len(buf) >= 14 and buf[12:14] == _ETH_IPV4:
        if len(buf) < 34:
            skipped.truncated += 1
            return
        ihl = (buf[14] & 0x0F) * 4
        l4 = 14 + ihl
        if ihl < 20 or len(buf) < l4:
            skipped.truncated += 1
            return
        proto = buf[23]
        sport = dport = 0
        first_fragment = (buf[20] & 0x1F) == 0 and buf[21] == 0
        if proto in (6, 17) and first_fragment:
            if len(buf) < l4 + 4:
                skipped.truncated += 1
                return
            sport = (buf[l4] << 8) | buf[l4 + 1]
            dport = (buf[l4 + 2] << 8) | buf[l4 + 3]
        batch.time.append(ts)
        batch.size.append(wire_len)
        batch.src_mac.append(buf[6:12])
        batch.src_ip.append(buf[26:30])
        batch.dst_ip.append(buf[30:34])
        batch.src_port.append(sport)
        batch.dst_port.append(dport)
        return
    try:
        eth = dpkt.ethernet.Ethernet(buf)
    except (dpkt.NeedData, dpkt.UnpackError):
        skipped.truncated += 1
        return
    ip = eth.data
    if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
        if eth.type in (dpkt.ethernet.ETH_TYPE_IP, dpkt.ethernet.ETH_TYPE_IP6):
            skipped.truncated += 1  # says IP, but the header did not parse
        else:
            skipped.non_ip += 1
        return
    l4 = ip.data
    sport = dport = 0
    if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
        sport, dport = l4.sport, l4.dport
    elif isinstance(l4, bytes) and getattr(ip, "p", None) in (6, 17):
        skipped.truncated += 1  # header promised TCP/UDP but the segment did not parse
        return
    batch.time.append(ts)
    batch.size.append(wire_len)
    batch.src_mac.append(bytes(eth.src))
    batch.src_ip.append(bytes(ip.src))
    batch.dst_ip.append(bytes(ip.dst))
    batch.src_port.append(sport)
    batch.dst_port.append(dport)


def frames_batch(frames: list[tuple[float, bytes]]) -> PacketBatch:
    """(timestamp, Ethernet frame) pairs, e.g. the traffic simulator's, as one batch (frames that are not IP skipped)."""
    batch, skipped = PacketBatch(), SkipCounts()
    for t, frame in frames:
        parse_frame(t, frame, len(frame), batch, skipped)
    return batch


def _reader(fh):
    head = fh.read(4)
    fh.seek(0)
    if head == b"\x0a\x0d\x0d\x0a":
        return dpkt.pcapng.Reader(fh)
    return dpkt.pcap.Reader(fh)


# Classic pcap magic (as the first 4 bytes in the file) -> (byte order, nanosecond timestamps).
_PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": ("<", False), b"\xa1\xb2\xc3\xd4": (">", False),
               b"\x4d\x3c\xb2\xa1": ("<", True), b"\xa1\xb2\x3c\x4d": (">", True)}
_READ_CHUNK = 1 << 22
# No link layer frame is longer than this; a record header claiming more is corrupt.
_MAX_FRAME = 1 << 18
_NANO = Decimal("1E9")


class _CutOff(Exception):
    """The file ends inside a record, or a record header is corrupt."""


def _pcap_records(fh, byte_order: str, nano: bool) -> Iterator[tuple[float, bytes]]:
    """(timestamp, frame) of each record after the global header: big reads and struct, no per-record objects.

    Timestamps are computed as dpkt computes them (seconds + fraction / 1e6, or / Decimal 1e9), so features
    do not depend on which reader read the file.
    """
    record = struct.Struct(byte_order + "IIII")
    buf, pos = b"", 0
    while True:
        if len(buf) - pos < 16:
            buf, pos = buf[pos:] + fh.read(_READ_CHUNK), 0
            if len(buf) == 0:
                return
            if len(buf) < 16:
                raise _CutOff
        sec, frac, caplen, _ = record.unpack_from(buf, pos)
        if caplen > _MAX_FRAME:
            raise _CutOff
        end = pos + 16 + caplen
        if end > len(buf):
            more = fh.read(max(_READ_CHUNK, caplen))
            if not more:
                raise _CutOff
            buf, pos = buf[pos:] + more, 0
            continue
        ts = float(sec + Decimal(frac) / _NANO) if nano else sec + frac / 1e6
        yield ts, buf[pos + 16:end]
        pos = end


def read_capture(path: str | Path, batch_size: int = 65536) -> Iterator[tuple[PacketBatch, SkipCounts]]:
    """Yield batches of parsed packets from a pcap or pcapng file (skip counts are cumulative).

    Classic pcap (the common case, and what tcpdump writes) is read by _pcap_records; pcapng and the
    rare "modified pcap" go through dpkt.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: capture file not found")
    skipped = SkipCounts()
    with open(p, "rb") as fh:
        head = fh.read(24)
        fast = _PCAP_MAGIC.get(head[:4]) if len(head) == 24 else None
        if fast is not None:
            linktype = struct.unpack_from(fast[0] + "I", head, 20)[0]
            records: Iterator[tuple[float, bytes]] = _pcap_records(fh, *fast)
        else:
            fh.seek(0)
            try:
                reader = _reader(fh)
            except (ValueError, dpkt.UnpackError, dpkt.NeedData) as exc:
                raise DataError(f"{p}: not a pcap or pcapng capture ({exc})") from None
            linktype, records = reader.datalink(), iter(reader)
        if linktype != dpkt.pcap.DLT_EN10MB:
            raise DataError(f"{p}: link type {linktype} not supported; expected Ethernet (DLT_EN10MB)")
        batch = PacketBatch()
        try:
            for ts, buf in records:
                parse_frame(float(ts), buf, len(buf), batch, skipped)
                if len(batch) >= batch_size:
                    yield batch, skipped
                    batch = PacketBatch()
        except (_CutOff, dpkt.NeedData, dpkt.UnpackError, ValueError):
            skipped.malformed += 1  # a cut-off file: keep what was read
        yield batch, skipped


def live_capture(interface: str, batch_packets: int = 256, timeout_s: float = 1.0,
                 duration_s: float | None = None) -> Iterator[tuple[PacketBatch, SkipCounts]]:
    """Capture from a Linux interface with an AF_PACKET raw socket (needs root or CAP_NET_RAW).

    The socket is opened before this returns (so nothing sent afterwards is missed); the returned
    iterator stops after duration_s seconds when given, else runs until interrupted.
    """
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        sock.bind((interface, 0))
    except AttributeError:
        raise DataError("live capture needs Linux (AF_PACKET); read a pcap file instead") from None
    except PermissionError:
        raise DataError(f"live capture on {interface} needs root or CAP_NET_RAW") from None
    except OSError as exc:
        raise DataError(f"cannot capture on interface {interface!r}: {exc.strerror}") from None
    sock.settimeout(timeout_s)
    try:  # the kernel's receive time of each packet, not ours (see _capture_loop)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        pass
    return _capture_loop(sock, batch_packets, timeout_s, duration_s)


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux: the same value on x86 and ARM (asm-generic)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
_TIMESPEC = {16: struct.Struct("=qq"), 8: struct.Struct("=ll")}  # 64-bit / 32-bit time_t


def packet_time(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    """The kernel's receive time of a packet from recvmsg's ancillary data (SO_TIMESTAMPNS); None without it."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(data) in _TIMESPEC:
            sec, nsec = _TIMESPEC[len(data)].unpack(data)
            return sec + nsec * 1e-9
    return None


def _capture_loop(sock: socket.socket, batch_packets: int, timeout_s: float,
                  duration_s: float | None) -> Iterator[tuple[PacketBatch, SkipCounts]]:
    """Batches of live packets, each stamped with the time the kernel received it: a board busy with something else
    (training, another process) reads packets late and in bunches, and stamping them when read made their
    inter-arrival times, hence the jitter features, wrong (measured in the LAN test: an unattacked camera's board
    under CPU load raised 112 window alerts on its benign traffic)."""
    import time

    stop_at = None if duration_s is None else time.monotonic() + duration_s
    skipped = SkipCounts()
    try:
        while stop_at is None or time.monotonic() < stop_at:
            batch = PacketBatch()
            deadline = time.monotonic() + timeout_s
            while len(batch) < batch_packets and time.monotonic() < deadline:
                try:
                    buf, ancdata, _flags, _addr = sock.recvmsg(65535, 64)
                except socket.timeout:
                    break
                t = packet_time(ancdata)
                parse_frame(time.time() if t is None else t, buf, len(buf), batch, skipped)
            yield batch, skipped
    finally:
        sock.close()
