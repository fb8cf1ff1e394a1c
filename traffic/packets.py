"""Read packets (pcap, pcapng, live AF_PACKET capture) into the fields the feature extractor needs.

Non-IP frames (ARP, ...), truncated frames and frames that do not parse are skipped and counted;
a file that is not a capture at all gives one clear error.
"""
from __future__ import annotations

import mmap
import os
import select
import socket
import struct
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterator, Sequence

import dpkt

from fediot.errors import DataError


# PacketBatch's per-packet lists, every one of them always filled (`frame` aside: kept only when asked)
PACKET_FIELDS = ("time", "size", "src_mac", "src_ip", "dst_ip", "src_port", "dst_port")


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
    frame: list[bytes] | None = None  # each packet's Ethernet frame, kept only when asked (alert evidence: a pcap)

    def __len__(self) -> int:
        return len(self.time)

    def subset(self, idx: Sequence[int]) -> PacketBatch:
        """The packets at these positions, in this order (frames too, when kept)."""
        out = PacketBatch(**{name: [getattr(self, name)[i] for i in idx] for name in PACKET_FIELDS})
        if self.frame is not None:
            out.frame = [self.frame[i] for i in idx]
        return out


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
        if batch.frame is not None:
            batch.frame.append(bytes(buf))
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
    if batch.frame is not None:
        batch.frame.append(bytes(buf))


def frames_batch(frames: list[tuple[float, bytes]]) -> PacketBatch:
    """(timestamp, Ethernet frame) pairs, e.g. the traffic simulator's, as one batch (frames that are not IP skipped)."""
    batch, skipped = PacketBatch(), SkipCounts()
    for t, frame in frames:
        parse_frame(t, frame, len(frame), batch, skipped)
    return batch


def _reader(fh):
    """dpkt's reader for what _pcap_records and _pcapng_records do not read (the rare "modified pcap")."""
    return dpkt.pcap.Reader(fh)


# Classic pcap magic (as the first 4 bytes in the file) -> (byte order, nanosecond timestamps).
_PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": ("<", False), b"\xa1\xb2\xc3\xd4": (">", False),
               b"\x4d\x3c\xb2\xa1": ("<", True), b"\xa1\xb2\x3c\x4d": (">", True)}
_READ_CHUNK = 1 << 22
# No link layer frame is longer than this; a record header claiming more is corrupt.
_MAX_FRAME = 1 << 18
_NANO = Decimal("1E9")


class _CutOff(Exception):
    """The file ends inside a record (a capture stopped mid-write): what was read is kept."""


class _Corrupt(Exception):
    """A record or block header no writer produces: nothing after it can be trusted (one clear error)."""


_PCAPNG_SHB, _PCAPNG_IDB, _PCAPNG_PB, _PCAPNG_EPB = 0x0A0D0D0A, 1, 2, 6  # other blocks are skipped
_PCAPNG_BOM = 0x1A2B3C4D
_MAX_BLOCK = _MAX_FRAME + (1 << 16)  # a packet block: its frame plus room for options; other blocks the same


def _pcapng_records(fh) -> Iterator[tuple[float, bytes]]:
    """(timestamp, frame) of each packet of a pcapng file, every block length bounded before it is read.

    dpkt's reader reads whatever length a block header claims (0xFFFFFFF0: 4 GB asked of the file) and a bad block
    ended the file silently (issue 34: "nothing written" for a file of 9,223 packets). Timestamps as dpkt computes
    them (ts offset + ((high << 32) | low) / divisor, per interface), so both readers give the same features."""
    order, interfaces, offset = "<", [], 0
    while True:
        head = fh.read(8)
        if len(head) == 0:
            return
        if len(head) < 8:
            raise _CutOff
        btype = struct.unpack_from("<I", head)[0]
        if btype == _PCAPNG_SHB:  # a section: its byte order from its byte-order magic
            more = fh.read(4)
            if len(more) < 4:
                raise _CutOff
            bom = struct.unpack_from("<I", more)[0]
            order = "<" if bom == _PCAPNG_BOM else ">" if struct.unpack_from(">I", more)[0] == _PCAPNG_BOM else ""
            if not order:
                raise _Corrupt(f"section header at byte {offset}: no byte-order magic")
            interfaces = []
            head += more
        btype, blen = struct.unpack_from(order + "II", head)
        if blen < 12 or blen % 4 or blen > _MAX_BLOCK:
            raise _Corrupt(f"block at byte {offset} claims {blen} bytes (a multiple of 4 in 12..{_MAX_BLOCK})")
        body = fh.read(blen - len(head))
        if len(body) < blen - len(head):
            raise _CutOff
        block = head + body
        if struct.unpack_from(order + "I", block, blen - 4)[0] != blen:
            raise _Corrupt(f"block at byte {offset}: its trailing length differs from its leading one ({blen})")
        if btype == _PCAPNG_IDB:
            if blen < 20:
                raise _Corrupt(f"interface block at byte {offset} is too short")
            linktype = struct.unpack_from(order + "H", block, 8)[0]
            divisor, tsoffset, pos = 1e6, 0, 16
            while pos + 4 <= blen - 4:  # options: code, length, value padded to 4
                code, olen = struct.unpack_from(order + "HH", block, pos)
                if code == 0 or pos + 4 + olen > blen - 4:
                    break
                if code == 9 and olen >= 1:  # if_tsresol
                    v = block[pos + 4]
                    divisor = float((2 if v & 0x80 else 10) ** (v & 0x7F))
                elif code == 14 and olen >= 8:  # if_tsoffset
                    tsoffset = struct.unpack_from(order + "q", block, pos + 4)[0]
                pos += 4 + olen + (-olen % 4)
            interfaces.append((linktype, divisor, tsoffset))
        elif btype in (_PCAPNG_EPB, _PCAPNG_PB):
            if blen < 32:
                raise _Corrupt(f"packet block at byte {offset} is too short")
            if btype == _PCAPNG_EPB:
                iface, high, low, caplen = struct.unpack_from(order + "IIII", block, 8)
            else:
                iface, _, high, low, caplen = struct.unpack_from(order + "HHIII", block, 8)
            if iface >= len(interfaces) or caplen > blen - 32:
                raise _Corrupt(f"packet block at byte {offset}: interface {iface} of {len(interfaces)}, "
                               f"{caplen} bytes captured in a block of {blen}")
            linktype, divisor, tsoffset = interfaces[iface]
            if linktype != dpkt.pcap.DLT_EN10MB:
                raise _Corrupt(f"packet block at byte {offset}: link type {linktype}; expected Ethernet (DLT_EN10MB)")
            yield tsoffset + (((high << 32) | low) / divisor), block[28:28 + caplen]
        offset += blen


def _pcap_records(fh, byte_order: str, nano: bool) -> Iterator[tuple[float, bytes]]:
    """(timestamp, frame) of each record after the global header: big reads and struct, no per-record objects.

    Timestamps are computed as dpkt computes them (seconds + fraction / 1e6, or / Decimal 1e9), so features
    do not depend on which reader read the file.
    """
    record = struct.Struct(byte_order + "IIII")
    buf, pos, index = b"", 0, 1
    while True:
        if len(buf) - pos < 16:
            buf, pos = buf[pos:] + fh.read(_READ_CHUNK), 0
            if len(buf) == 0:
                return
            if len(buf) < 16:
                raise _CutOff
        sec, frac, caplen, _ = record.unpack_from(buf, pos)
        if caplen > _MAX_FRAME:
            raise _Corrupt(f"record {index} claims a captured length of {caplen} bytes (at most {_MAX_FRAME})")
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
        index += 1


def read_capture(path: str | Path, batch_size: int = 65536,
                 keep_frames: bool = False) -> Iterator[tuple[PacketBatch, SkipCounts]]:
    """Yield batches of parsed packets from a pcap or pcapng file (skip counts are cumulative); with `keep_frames`
    each batch holds its packets' frames too (`PacketBatch.frame`).

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
        elif head[:4] == b"\x0a\x0d\x0d\x0a":
            fh.seek(0)
            linktype, records = dpkt.pcap.DLT_EN10MB, _pcapng_records(fh)  # each interface's link type is checked
        else:
            fh.seek(0)
            try:
                reader = _reader(fh)
            except (ValueError, dpkt.UnpackError, dpkt.NeedData) as exc:
                raise DataError(f"{p}: not a pcap or pcapng capture ({exc})") from None
            linktype, records = reader.datalink(), iter(reader)
        if linktype != dpkt.pcap.DLT_EN10MB:
            raise DataError(f"{p}: link type {linktype} not supported; expected Ethernet (DLT_EN10MB)")
        batch = PacketBatch(frame=[] if keep_frames else None)
        try:
            for ts, buf in records:
                parse_frame(float(ts), buf, len(buf), batch, skipped)
                if len(batch) >= batch_size:
                    yield batch, skipped
                    batch = PacketBatch(frame=[] if keep_frames else None)
        except (_CutOff, dpkt.NeedData, dpkt.UnpackError, ValueError):
            skipped.malformed += 1  # a cut-off file: keep what was read
        except _Corrupt as exc:
            raise DataError(f"{p}: corrupt capture: {exc}; nothing after it can be read (repair it, e.g. with "
                            "pcapfix, or cut the file before it)") from None
        yield batch, skipped


def live_capture(interface: str, batch_packets: int = 256, timeout_s: float = 1.0,
                 duration_s: float | None = None, ring_mb: float = 4.0,
                 max_wait_s: float | None = None,
                 keep_frames: bool = False,
                 urgent: Callable[[bytes], bool] | None = None) -> Iterator[tuple[PacketBatch, SkipCounts]]:
    """Capture from a Linux interface with an AF_PACKET raw socket (needs root or CAP_NET_RAW).

    The kernel writes each packet into a ring shared with this process (TPACKET_V2, `ring_mb` megabytes, one packet
    per RING_FRAME_BYTES) with the time it received it: a board busy elsewhere reads late, never with wrong times.
    The socket is opened before this returns (so nothing sent afterwards is missed); the returned
    iterator stops after duration_s seconds when given, else runs until interrupted. A batch is handed on when it
    holds batch_packets packets, after timeout_s, or (max_wait_s) that long after its first packet was read: detect's
    latency from a packet to its alert (a flood fills a batch at once; a first scan packet waited up to timeout_s).
    A packet whose source or destination address `urgent` names (detect: an endpoint another board indicated, not yet
    warned of here) ends its batch at once: its early warning does not wait for max_wait_s.
    """
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
    except AttributeError:
        raise DataError("live capture needs Linux (AF_PACKET); read a pcap file instead") from None
    except PermissionError:
        raise DataError(f"live capture on {interface} needs root or CAP_NET_RAW") from None
    try:
        frames = max(RING_FRAMES_PER_BLOCK, int(ring_mb * 2**20) // RING_FRAME_BYTES // RING_FRAMES_PER_BLOCK
                     * RING_FRAMES_PER_BLOCK)
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack("=IIII", RING_FRAME_BYTES * RING_FRAMES_PER_BLOCK,
                                                                frames // RING_FRAMES_PER_BLOCK, RING_FRAME_BYTES, frames))
        ring = mmap.mmap(sock.fileno(), frames * RING_FRAME_BYTES, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        sock.bind((interface, 0))
    except OSError as exc:
        sock.close()
        raise DataError(f"cannot capture on interface {interface!r}: {exc.strerror or exc}") from None
    return _capture_loop(sock, ring, frames, batch_packets, timeout_s, duration_s, max_wait_s, keep_frames, urgent)


# The kernel's packet ring (linux/if_packet.h): the same values on every Linux architecture.
SOL_PACKET, PACKET_RX_RING, PACKET_VERSION, TPACKET_V2 = 263, 5, 10, 1
TP_STATUS_USER = 1  # a frame's status: the kernel has filled it (0: it is the kernel's to fill)
RING_FRAME_BYTES = 2048  # per packet: a whole 1,514-byte Ethernet frame fits; longer ones (GRO on lo) keep their headers
RING_FRAMES_PER_BLOCK = 32  # 64 KiB blocks (a multiple of the page size)
_TPACKET2_HDR = struct.Struct("=IIIHHII")  # tp_status, tp_len, tp_snaplen, tp_mac, tp_net, tp_sec, tp_nsec


def _capture_loop(sock: socket.socket, ring: mmap.mmap, frames: int, batch_packets: int, timeout_s: float,
                  duration_s: float | None, max_wait_s: float | None = None,
                  keep_frames: bool = False,
                  urgent: Callable[[bytes], bool] | None = None) -> Iterator[tuple[PacketBatch, SkipCounts]]:
    """Batches of live packets, each stamped with the time the kernel received it (tp_sec/tp_nsec, written when the
    packet reached the ring). A board busy with something else (training, another process) reads packets late and in
    bunches: stamping them when read made their inter-arrival times, hence the jitter features, wrong (measured in the
    LAN test: an unattacked camera's board under CPU load raised 112 window alerts on its benign traffic). The socket's
    own timestamps (SO_TIMESTAMPNS) were not enough: a packet the kernel had not stamped on arrival (it stamps only
    while some socket asks, switched for all at once) got the time it was read (one probe packet in a CI run); the ring
    stamps each packet when the kernel delivers it."""
    import time

    stop_at = None if duration_s is None else time.monotonic() + duration_s
    skipped = SkipCounts()
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLERR)
    slot = 0
    try:
        while stop_at is None or time.monotonic() < stop_at:
            batch = PacketBatch(frame=[] if keep_frames else None)
            deadline = time.monotonic() + timeout_s
            while len(batch) < batch_packets and time.monotonic() < deadline:
                at = slot * RING_FRAME_BYTES
                status, wire_len, snap_len, mac, _net, sec, nsec = _TPACKET2_HDR.unpack_from(ring, at)
                if not status & TP_STATUS_USER:
                    left = deadline - time.monotonic()
                    if left > 0 and any(ev & (select.POLLERR | select.POLLNVAL)
                                        for _, ev in poller.poll(max(1, int(left * 1000)))):
                        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        raise DataError(f"live capture stopped: {os.strerror(err) if err else 'socket error'}")
                    continue
                if max_wait_s is not None and len(batch) == 0:  # the first packet: hand the batch on soon
                    deadline = min(deadline, time.monotonic() + max_wait_s)
                before = len(batch)
                parse_frame(sec + nsec * 1e-9, ring[at + mac:at + mac + snap_len], wire_len, batch, skipped)
                struct.pack_into("=I", ring, at, 0)  # the frame is the kernel's again
                slot = (slot + 1) % frames
                if urgent is not None and len(batch) > before and (urgent(batch.src_ip[-1]) or
                                                                   urgent(batch.dst_ip[-1])):
                    break
            yield batch, skipped
    finally:
        ring.close()
        sock.close()
