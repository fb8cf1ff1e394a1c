"""The gRPC transport against certified boards that send slowly, too much or garbage (issue 34, items 1 and 2), in
this process: a server transport and a board's, real gRPC and mutual TLS on loopback, no federation around them.

Before: three slow 8 MB uploads from one board's certificate held gRPC's shared call limit, so the other boards'
answers were refused and the run stopped; a board's decoding bombs were read and parsed for the whole run."""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from deployment.certs import make_certs
from deployment.front import FrontLimits
from deployment.grpc_transport import FedIoTGrpcTransport
from deployment.ipconfig import Peer
from deployment.tls import load_identity
from federation.messages import C2S_HELLO
from federation.wire import encode
from tests.deploy_helpers import channel_to, free_ports, send_raw
from trainer.transport import Delivery, Refused

MAX_BYTES = 1 << 20


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    make_certs(out, 2, [])
    return out


def node(certs: Path, peers: dict[int, Peer], rank: int, send_timeout_s: float = 20.0,
         quarantine_after: int | None = None) -> FedIoTGrpcTransport:
    return FedIoTGrpcTransport(peers, rank, load_identity(certs, rank, []), "127.0.0.1", send_timeout_s, MAX_BYTES,
                               quarantine_after)


def lan(n: int = 3) -> dict[int, Peer]:
    return {r: Peer(r, "127.0.0.1", port, "") for r, port in enumerate(free_ports(n))}


def drain(t: FedIoTGrpcTransport, until: float) -> list:
    """What reached the server's inbox until `until` (monotonic)."""
    items = []
    while time.monotonic() < until:
        try:
            items.append(t.message_q.get(0.05))
        except queue.Empty:
            pass
    return items


def slowly(total: int, chunk: int, pause_s: float, stop: threading.Event) -> Iterator[bytes]:
    """An upload at chunk / pause_s bytes a second (issue 34: ~2 KB/s), until `stop`."""
    sent = 0
    while sent < total and not stop.is_set():
        yield bytes(chunk)
        sent += chunk
        stop.wait(pause_s)


def test_slow_uploads_hold_only_their_own_senders_turn(certs):
    """Board 2's certificate opens three calls and sends at ~2 KB/s: its second and third are refused at once, unread
    (one message of a sender is read at a time), and board 1's messages arrive as if nothing happened; the slow call
    is cancelled once it has been read for longer than the sender's own send timeout."""
    peers = lan()
    server = node(certs, peers, 0, send_timeout_s=3.0)
    board = node(certs, peers, 1)
    stop = threading.Event()
    outcomes: list[str] = []

    def slow_call() -> None:
        try:
            send_raw(peers[0].port, b"", certs, "client2", chunks=slowly(8 * 2**20, 2048, 1.0, stop), timeout=60)
            outcomes.append("delivered")
        except grpc.RpcError as exc:
            outcomes.append(exc.code().name)

    try:
        callers = [threading.Thread(target=slow_call) for _ in range(3)]
        for c in callers:
            c.start()
            time.sleep(0.2)
        hello = encode(C2S_HELLO, 1, 0, {"device": "Danmini_Doorbell", "n_train": 10})
        started = time.monotonic()
        for _ in range(20):
            board.send_bytes(0, hello)  # raises PeerUnreachable if refused
        took = time.monotonic() - started
        items = drain(server, time.monotonic() + 5.0)
        for c in callers:
            c.join(10)
    finally:
        stop.set()
        server.stop_receive_message()
        board.stop_receive_message()
    delivered = [i for i in items if isinstance(i, Delivery)]
    assert [d.peer_rank for d in delivered] == [1] * 20 and took < 10, took
    assert sorted(outcomes) == ["CANCELLED", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"], outcomes
    reasons = [i.reason for i in items if isinstance(i, Refused)]
    assert sum("one at a time" in r for r in reasons) == 2
    assert sum("still being sent after" in r for r in reasons) == 1
    assert not any("bad magic" in r for r in reasons)  # what a cancelled call sent is never taken for a message


def test_malformed_messages_quarantine_a_certificate_not_the_others(certs):
    """Board 2's certificate sends garbage and over-sized messages: each is refused and counted, the fifth
    quarantines rank 2 (reported once), after which its calls, even well-formed ones, are refused unread
    (PERMISSION_DENIED); board 1 is never affected. Over-sized messages are refused at the first chunk past the
    limit."""
    peers = lan()
    server = node(certs, peers, 0, quarantine_after=5)
    quarantined: list[tuple] = []
    server.admission.on_quarantine = lambda key, why: quarantined.append((key, why))
    board = node(certs, peers, 1)
    codes = []
    try:
        for payload in (b"\x00garbage", bytes(MAX_BYTES + 1), b"FIOT" + bytes(100), b"\x00" * 10, bytes(3 * MAX_BYTES)):
            with pytest.raises(grpc.RpcError) as info:
                send_raw(peers[0].port, payload, certs, "client2")
            codes.append(info.value.code())
        hello_2 = encode(C2S_HELLO, 2, 0, {"device": "Ecobee_Thermostat", "n_train": 10})
        with pytest.raises(grpc.RpcError) as info:
            send_raw(peers[0].port, hello_2, certs, "client2")
        board.send_bytes(0, encode(C2S_HELLO, 1, 0, {"device": "Danmini_Doorbell", "n_train": 10}))
        items = drain(server, time.monotonic() + 1.0)
    finally:
        server.stop_receive_message()
        board.stop_receive_message()
    assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 5
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and "quarantined" in info.value.details()
    assert [k for k, _ in quarantined] == [2] and "5 messages that are not FedIoT messages" in quarantined[0][1]
    assert [i.peer_rank for i in items if isinstance(i, Delivery)] == [1]
    reasons = [i.reason for i in items if isinstance(i, Refused)]
    assert sum("over comm_args.max_message_mb" in r and "not read further" in r for r in reasons) == 2
    assert sum(r.startswith("quarantined") for r in reasons) == 1


def test_without_quarantine_a_board_only_refuses(certs):
    """A board's transport (quarantine_after None) refuses garbage without ever quarantining its sender; a rank that
    may not send to it (another board) is refused before a byte is read."""
    peers = lan()
    board = node(certs, peers, 1)
    reported: list = []
    board.admission.on_quarantine = lambda key, why: reported.append(key)
    board.peer_ranks = {0}
    try:
        for _ in range(7):
            with pytest.raises(grpc.RpcError) as info:
                send_raw(peers[1].port, b"\x00garbage", certs, "server", receiver=1)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as info:
            send_raw(peers[1].port, encode(C2S_HELLO, 2, 1, {"device": "x", "n_train": 1}), certs, "client2", receiver=1)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and "not read" in info.value.details()
    finally:
        board.stop_receive_message()
    assert reported == [] and board.admission.quarantined == {}


def test_plaintext_senders_are_known_by_connection(certs):
    """Without TLS nothing proves a sender: admission is per connection and nobody is quarantined (two boards on one
    host must not share a turn)."""
    peers = lan()
    server = FedIoTGrpcTransport(peers, 0, None, "127.0.0.1", 20.0, MAX_BYTES, 2)
    try:
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as info:
                send_raw(peers[0].port, b"\x00garbage")
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with channel_to(peers[0].port) as ch:  # and a well-formed message still goes through
            from deployment.grpc_transport import chunks_of, send_over

            send_over(ch, chunks_of(encode(C2S_HELLO, 1, 0, {"device": "Danmini_Doorbell", "n_train": 10})), 10)
    finally:
        server.stop_receive_message()
    assert server.admission.quarantined == {}


def test_a_board_that_stops_reading_holds_up_only_its_own_messages(certs):
    """The server sends to each board on that board's own thread: a board whose port takes the connection and never
    reads (HTTP/2 flow control would hold a send until send_timeout_s) delays neither the server's other boards nor
    its caller; its send fails after send_timeout_s and is reported through the callback."""
    import socket

    from fedml.core.distributed.communication.message import Message

    peers = lan()
    silent = socket.socket()
    silent.bind(("127.0.0.1", peers[2].port))
    silent.listen(8)  # accepts (the kernel does) and never reads
    server = node(certs, peers, 0, send_timeout_s=3.0)
    board = node(certs, peers, 1)
    failed: list[tuple[int, float]] = []
    started = time.monotonic()
    try:
        server.send_later(Message(C2S_HELLO, 0, 2), lambda r, _e, _x: failed.append((r, time.monotonic() - started)))
        for _ in range(10):
            server.send_later(Message(C2S_HELLO, 0, 1), lambda r, e, _x: failed.append((r, -1.0)))
        queued = time.monotonic() - started
        items = drain(board, time.monotonic() + 1.5)
        took = [i for i in items if isinstance(i, Delivery)]
        deadline = time.monotonic() + 10
        while not failed and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        server.stop_receive_message()
        board.stop_receive_message()
        silent.close()
    assert queued < 0.5 and len(took) == 10  # queued at once; board 1 had all ten within 1.5 s
    assert [r for r, _ in failed] == [2] and 2.5 < failed[0][1] < 8, failed


def test_the_server_reads_what_it_asked_for_and_a_small_allowance(certs):
    """With pace set (the server's), a board is read only for the answers it was asked for plus an allowance for
    hellos and health reports: a board sending valid messages nobody asked for, as fast as it can, was read and decoded
    every time (3.8x slower honest rounds); now the calls beyond are refused unread and counted."""
    peers = lan()
    server = node(certs, peers, 0)
    server.admission.pace = (0.5, 2.0)  # half a message a second, two in reserve
    hello = encode(C2S_HELLO, 1, 0, {"device": "Danmini_Doorbell", "n_train": 10})

    def outcome() -> str:
        try:
            send_raw(peers[0].port, hello, certs, "client1")
            return "taken"
        except grpc.RpcError as exc:
            return exc.code().name

    try:
        codes = [outcome() for _ in range(5)]
        server.admission.grant(1, 3)  # the server asks rank 1 for three answers
        codes += [outcome() for _ in range(4)]
        items = drain(server, time.monotonic() + 0.5)
    finally:
        server.stop_receive_message()
    assert codes == ["taken", "taken"] + ["RESOURCE_EXHAUSTED"] * 3 + ["taken"] * 3 + ["RESOURCE_EXHAUSTED"], codes
    assert len([i for i in items if isinstance(i, Delivery)]) == 5
    assert sum("more messages than the server asked for" in i.reason for i in items if isinstance(i, Refused)) == 4


FRONT = FrontLimits(connections=2, new_per_s=1.0, burst=4, pause_first_s=0.2, pause_max_s=1.0)


def test_the_front_relays_and_names_the_real_peer(certs):
    """Behind the front (deployment/front.py) a certified board's messages arrive as before, with the board's own
    address, not the front's; TLS is still the gRPC server's (a caller without a certificate is refused)."""
    peers = lan()
    server = FedIoTGrpcTransport(peers, 0, load_identity(certs, 0, []), "127.0.0.1", 20.0, MAX_BYTES, 5, FRONT)
    board = node(certs, peers, 1)
    try:
        for _ in range(5):
            board.send_bytes(0, encode(C2S_HELLO, 1, 0, {"device": "Danmini_Doorbell", "n_train": 10}))
        with pytest.raises(grpc.RpcError) as info:
            send_raw(peers[0].port, b"x", certs)  # TLS without a certificate: refused at the handshake
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        items = drain(server, time.monotonic() + 1.0)
    finally:
        server.stop_receive_message()
        board.stop_receive_message()
    delivered = [i for i in items if isinstance(i, Delivery)]
    assert [d.peer_rank for d in delivered] == [1] * 5
    assert all(d.peer.startswith("ipv4:127.0.0.1:") and d.peer != delivered[0].peer.rsplit(":", 1)[0] for d in delivered)
    assert server.front is not None and server.front.refused_connections == 0


def test_the_front_paces_a_flood_of_refused_calls(certs):
    """Board 2's certificate sends calls nobody asked for as fast as it can, on one connection: each is refused, and
    each refusal pauses that connection (0.2 s doubling to 1 s), so in 3 s the server refuses a handful, not the
    thousands it did (~900 a second before the front); board 1's messages meanwhile arrive at once."""
    peers = lan()
    server = FedIoTGrpcTransport(peers, 0, load_identity(certs, 0, []), "127.0.0.1", 20.0, MAX_BYTES, None, FRONT)
    server.admission.pace = (0.0, 0.0)  # the server's pacing with nothing asked for: every call of rank 2 refused
    server.admission.grant(1, 1000)
    board = node(certs, peers, 1)
    stop = threading.Event()
    refused = [0]

    def flood() -> None:
        with channel_to(peers[0].port, certs, "client2") as ch:
            from deployment.grpc_transport import chunks_of, send_over

            hello = encode(C2S_HELLO, 2, 0, {"device": "Ecobee_Thermostat", "n_train": 10})
            while not stop.is_set():
                try:
                    send_over(ch, chunks_of(hello), 10)
                except grpc.RpcError:
                    refused[0] += 1

    attacker = threading.Thread(target=flood)
    try:
        attacker.start()
        time.sleep(3.0)
        started = time.monotonic()
        for _ in range(5):
            board.send_bytes(0, encode(C2S_HELLO, 1, 0, {"device": "Danmini_Doorbell", "n_train": 10}))
        took = time.monotonic() - started
        stop.set()
        attacker.join(10)
        items = drain(server, time.monotonic() + 0.5)
    finally:
        stop.set()
        server.stop_receive_message()
        board.stop_receive_message()
    assert 2 <= refused[0] <= 12, refused[0]  # 0.2 + 0.4 + 0.8 + 1.0 ...: about 5 pauses in 3 s, 2 calls each at most
    assert [i.peer_rank for i in items if isinstance(i, Delivery)] == [1] * 5 and took < 2.0, took


def test_the_front_limits_each_hosts_connections(certs):
    """Connections from one host beyond the front's limits (here: 2 at once and a burst of 4 for the one rank the
    address book places there — all of this test's ranks are on 127.0.0.1, so 3 ranks: 6 at once, a burst of 12)
    are refused before their TLS handshake and counted against the host; the ones held keep working."""
    peers = lan()
    server = FedIoTGrpcTransport(peers, 0, load_identity(certs, 0, []), "127.0.0.1", 20.0, MAX_BYTES, None, FRONT)
    import socket

    held = []
    try:
        for _ in range(12):  # the burst, each held open without a handshake
            s = socket.create_connection(("127.0.0.1", peers[0].port))
            held.append(s)
        time.sleep(0.3)
        assert server.front.refused_connections == 12 - 6
        items = drain(server, time.monotonic() + 0.5)
    finally:
        for s in held:
            s.close()
        server.stop_receive_message()
    refusals = [i for i in items if isinstance(i, Refused)]
    assert sum(r.count for r in refusals) == 6 and all("host 127.0.0.1" in r.sender for r in refusals)
    assert all("connections at once" in r.reason for r in refusals)


def test_the_front_forgets_only_idle_refilled_hosts(monkeypatch):
    """The front remembers at most HOSTS_KEPT hosts; beyond it, only hosts with nothing open whose bucket has
    refilled are forgotten (forgetting a host that just closed its connections would hand it a fresh burst)."""
    import deployment.front as front_mod

    monkeypatch.setattr(front_mod, "HOSTS_KEPT", 2)
    refused: list = []
    fr = front_mod.Front("127.0.0.1", free_ports(1)[0], 1, {}, FrontLimits(1, 1.0, 2, 0.05, 0.1),
                         lambda *a: refused.append(a))
    try:
        assert fr._admit("10.0.0.1") is None and fr._admit("10.0.0.2") is None
        for host in ("10.0.0.1", "10.0.0.2"):
            fr._hosts[host].open -= 1  # both closed their connection; 10.0.0.1's bucket refilled long ago
        fr._hosts["10.0.0.1"].at -= 60
        assert fr._admit("10.0.0.3") is None
        assert set(fr._hosts) == {"10.0.0.2", "10.0.0.3"}  # 10.0.0.2 is remembered: its bucket is not full yet
        assert fr._admit("10.0.0.2") is None and fr._admit("10.0.0.2") is not None  # 2 of its burst used, 1 open
    finally:
        fr.stop()
