"""Issue 22: numbers bounded where they enter, bounded decoding, a bounded inbox, and no message that stops a node.

Each attack here is the one a certified board was shown to carry out (issue 22, reproductions 1-3), or the
strongest value that stays just inside a bound."""
from __future__ import annotations

import math
import queue

import numpy as np
import pytest
import torch

from federation.inprocess import Faults
from federation.messages import (
    C2S_HELLO, C2S_UPDATE, C2S_VAL_STATS, MAX_HEADER_BYTES, Expectations, ProtocolError, decode_message, tensors_allowed,
    validate,
)
from federation import wire
from federation.wire import MAGIC, WireError, encode
from fediot.checks import MAX_VALUE, InputError, error_stats, feature_stats
from model.autoencoder import AutoEncoder
from model.detector import ErrorStats
from tests.rounds import DEVICES, FIVE_DEVICES, metrics_of, rounds_of, run, sim_values

EXPECT = Expectations.of(AutoEncoder(115), DEVICES)


# ------------------------------------------------------------------------------------- numbers bounded where they enter
def test_validation_statistics_that_overflow_the_threshold_are_refused():
    """Reproduction 1: {count 600, total 1e200, total_sq 1e300} passed as finite and crashed the server's threshold
    arithmetic (OverflowError). Now refused by the validator, and the arithmetic itself cannot raise."""
    with pytest.raises(InputError, match="totals outside"):
        error_stats(600, 1e200, 1e300, "val_stats")
    fields = {"round": 0, "client": DEVICES[0], "val_stats": {"count": 600, "total": 1e200, "total_sq": 1e300}}
    with pytest.raises(ProtocolError):
        validate(C2S_VAL_STATS, fields, EXPECT)
    # just inside the bounds: the largest errors float32 can hold, consistent; finite threshold, no exception
    s = ErrorStats(600, 600 * MAX_VALUE, 600 * MAX_VALUE ** 2)
    error_stats(s.count, s.total, s.total_sq, "val_stats")
    assert math.isfinite(s.threshold(3.0))
    with pytest.raises(ValueError, match="not finite"):  # what validation would have refused never raises elsewhere
        ErrorStats(1, 1.0, 1.7e308).threshold(1e160)


def test_statistics_that_contradict_themselves_are_refused():
    error_stats(100, 10.0, 1.0, "v")  # mean 0.1, mean square 0.01: all errors equal, fine
    with pytest.raises(InputError, match="contradict"):
        error_stats(100, 10.0, 0.5, "v")  # mean square below the squared mean: no rows have that
    rows = np.random.default_rng(0).lognormal(0, 1, (50, 3))
    args = (50, rows.sum(0).tolist(), (rows ** 2).sum(0).tolist(), rows.min(0).tolist(), rows.max(0).tolist())
    feature_stats(*args, "f")
    bad_total = list(args[1])
    bad_total[0] = 1e308  # reproduction 2: finite, and two of them overflow the merge
    with pytest.raises(InputError, match="feature 0"):
        feature_stats(50, bad_total, args[2], args[3], args[4], "f")
    with pytest.raises(InputError, match="feature 1"):
        feature_stats(50, args[1], args[2], [0.0, 5.0, 0.0], [1.0, 4.0, 1.0], "f")  # min > max


def test_two_boards_with_overflowing_feature_statistics_are_left_out_and_the_run_finishes(tmp_path):
    """Reproduction 2 on the in-process grid: their hellos are refused (named, counted), the others' run goes on."""
    def overflow(kind, rnd, client, fields):
        if kind == C2S_HELLO and client in ("Ecobee_Thermostat", "Ennio_Doorbell"):
            stats = dict(fields["feature_stats"])
            stats["total"], stats["total_sq"] = list(stats["total"]), list(stats["total_sq"])
            stats["total"][0] = stats["total_sq"][0] = 1e308
            return dict(fields, feature_stats=stats)
        return None

    _, grid, run_dir = run(sim_values(tmp_path, data_args__devices=FIVE_DEVICES, train_args__client_num_in_total=5,
                                      train_args__client_num_per_round=5), Faults(tamper=overflow))
    first = rounds_of(run_dir)[0]  # refused at the join, and again each time they say hello (before each request)
    assert first["rejected"] >= 2 and {r["from"] for r in first["rejections"]} == {"rank 2", "rank 3"}
    assert all("feature_stats: feature 0" in r["reason"] for r in first["rejections"])
    assert sorted(metrics_of(run_dir)["devices"]) == sorted(set(FIVE_DEVICES) - {"Ecobee_Thermostat", "Ennio_Doorbell"})
    assert metrics_of(run_dir)["global"]["modes"]["global"]["tpr"] > 0.9  # 2 rounds: detection works


def test_a_board_with_overflowing_validation_statistics_is_left_out_of_the_thresholds(tmp_path):
    """Reproduction 1 on the in-process grid, with the attack harness (attack_args val_overflow): its statistics
    are refused at every evaluation, the thresholds and metrics are the others', and the run finishes."""
    _, _, run_dir = run(sim_values(tmp_path, attack_args__malicious_ranks=[2], attack_args__attack="val_overflow"))
    for r in rounds_of(run_dir):
        assert r["rejected"] == 1 and r["rejections"][0]["from"] == "rank 2" and "val_stats" in r["rejections"][0]["reason"]
    assert sorted(metrics_of(run_dir)["devices"]) == ["Danmini_Doorbell", "Ennio_Doorbell"]


# ------------------------------------------------------------------------------------- bounded decoding
def test_a_header_bomb_is_refused_before_it_is_parsed():
    """Reproduction 3: ~1.9 M empty tensor entries in a 63 MiB header took 21 s and 2 GB to decode. A header over
    the limit is refused from its length alone; one just under it with too many tensors, before any is made."""
    n = 1_400_000  # ~63 MiB, under the 64 MiB message limit as in the reproduction
    header = b'{"type":"fediot_update","sender":1,"receiver":0,"fields":{' + b",".join(
        b'"t%d":{"__tensor__":["float32",[0],0,0]}' % i for i in range(n)) + b"}}"
    raw = MAGIC + len(header).to_bytes(4, "little") + header
    parsed = []
    real_loads = wire.json.loads
    wire.json.loads = lambda *a, **k: parsed.append(1) or real_loads(*a, **k)
    try:
        with pytest.raises(WireError, match="header of"):
            decode_message(raw, 64 * 2**20)
    finally:
        wire.json.loads = real_loads
    assert parsed == []  # refused from its length: the header was never parsed
    fits = MAX_HEADER_BYTES // len(b'"t1000000":{"__tensor__":["float32",[0],0,0]},') - 10
    header = b'{"type":"fediot_update","sender":1,"receiver":0,"fields":{' + b",".join(
        b'"t%d":{"__tensor__":["float32",[0],0,0]}' % i for i in range(fits)) + b"}}"
    raw = MAGIC + len(header).to_bytes(4, "little") + header
    with pytest.raises(WireError, match="more than 16 tensor"):
        decode_message(raw, 64 * 2**20)


def test_a_flooding_board_is_refused_and_counted_and_learns_what_an_honest_one_would(tmp_path):
    """The `flood` attack (attack_args): a board that answers honestly and sends decoding bombs after each answer.
    Every bomb is refused by the decoder and counted against its rank; what the federation learns is what it learns
    with that board honest."""
    from attacks.clients import decoding_bomb

    assert len(decoding_bomb(2, 8 * 2**20)) == 8 * 2**20 - 1  # just under the message limit
    with pytest.raises(WireError, match="more than 16 tensor"):  # parsed, then refused for its tensor count
        decode_message(decoding_bomb(2, 64 * 2**20), 64 * 2**20)
    _, _, honest = run(sim_values(tmp_path / "honest"))
    _, _, flooded = run(sim_values(tmp_path / "flood", attack_args__malicious_ranks=[2], attack_args__attack="flood",
                                   attack_args__attack_scale=1))
    records = rounds_of(flooded)
    answers_per_round = [1 + 2 * ("eval" in r) for r in records]  # an update; validation statistics and a report
    assert [r["rejected"] for r in records] == answers_per_round  # one bomb after each answer
    assert all(x["from"] == "rank 2" and "tensor" in x["reason"] for r in records for x in r["rejections"])
    assert metrics_of(flooded)["global"] == metrics_of(honest)["global"]


def test_tensors_only_where_a_type_carries_the_model():
    assert tensors_allowed(C2S_UPDATE) == 16 and tensors_allowed(C2S_VAL_STATS) == 0
    assert tensors_allowed("fediot_tick") is None  # a local event never comes from a peer
    raw = encode(C2S_VAL_STATS, 1, 0, {"round": 0, "client": DEVICES[0], "x": torch.zeros(3)})
    with pytest.raises(WireError, match="more than 0 tensor"):
        decode_message(raw, 2**20)


# ------------------------------------------------------------------------------------- the inbox
def test_the_inbox_bounds_each_peer_and_serves_own_events_first():
    from fedml.core.distributed.communication.message import Message

    from trainer.transport import Delivery, Inbox, Refused

    def msg(fill: bytes, size: int) -> bytes:
        return MAGIC + (2).to_bytes(4, "little") + b"{}" + fill * (size - 11)

    box = Inbox(per_peer_bytes=1000, max_bytes=10**6)
    x, y, z = msg(b"x", 600), msg(b"y", 600), msg(b"z", 600)
    assert box.put(Delivery(x, 1, "MPI")) and box.put(Delivery(y, 2, "MPI"))
    assert not box.put(Delivery(z, 1, "MPI"))  # rank 1 has 600 bytes waiting: 1,200 > 1,000
    assert not box.put(Delivery(b"garbage", 2, "MPI"))  # not a message: refused before it is queued
    for _ in range(Inbox.REFUSALS_LISTED + 5):
        box.put(Delivery(b"garbage", 3, "MPI"))
    tick = Message("fediot_tick", 0, 0)
    box.put(tick)
    assert box.get(0.1) is tick  # own events first, whatever waits
    first, second = box.get(0.1), box.get(0.1)
    assert isinstance(first, Refused) and first.sender == "rank 1 (MPI)" and "bytes of its messages" in first.reason
    assert second.sender == "rank 2 (MPI)" and "bad magic" in second.reason
    listed = [box.get(0.1) for _ in range(Inbox.REFUSALS_LISTED)]
    assert all(r.sender == "rank 3 (MPI)" and r.count == 1 for r in listed)
    rest = box.get(0.1)
    assert rest.count == 5 and "bad magic" in rest.reason  # a flood of refusals is counted, not listed
    assert box.get(0.1).raw == x and box.get(0.1).raw == y
    big = msg(b"z", 900)
    assert box.put(Delivery(big, 1, "MPI"))  # handled: room again
    assert box.get(0.1).raw == big
    with pytest.raises(queue.Empty):
        box.get(0.01)


def test_a_board_refuses_a_threshold_its_own_validation_rows_cannot_support(tmp_path):
    """Issue 34 (5): the server's threshold for a board's device reaches detect --follow only within
    validation_args.board_threshold_ratio of the board's own; 1e300 (blind) or 1e-12 (alert on everything) gives
    the board's own threshold instead, recorded (threshold_checks.jsonl) and counted."""
    import json

    from data.sources import prepare_data
    from federation.client import ClientLoader, LiveDetector
    from federation.state import RoundState
    from fediot.config import validate
    from model.lean import LeanDetector
    from tests.rounds import sim_values

    cfg = validate(sim_values(tmp_path))
    data_root, _ = prepare_data(cfg)
    client = ClientLoader(cfg, data_root, tmp_path)(cfg.clients[0])
    path = tmp_path / "detector" / "model.npz"
    client.live = LiveDetector(path, cfg.validation.threshold_k, {"kind": "test"}, cfg.validation.board_threshold_ratio)
    client.record_file = tmp_path / "device.jsonl"
    state = RoundState(cfg, {"source": "synthetic"}, "federated")
    state.fit_normalizer({client.device: client.stats})
    g = state._global()
    client.validation_stats(g["model"], g["normalizer"])
    own = client.scores.validation_stats(client.window, client.rule).threshold_by(client.rule)
    ratio = cfg.validation.board_threshold_ratio
    for rounds_done, sent, want in ((1, own * ratio * 0.99, own * ratio * 0.99), (2, 1e300, own), (3, 1e-12, own),
                                    (4, own / ratio * 1.01, own / ratio * 1.01)):
        client.publish_live(rounds_done, 0.5, sent)
        assert LeanDetector.load(path).threshold_for(client.device) == pytest.approx(want), rounds_done
    assert client.live.thresholds_refused == 2
    checks = [json.loads(line) for line in (tmp_path / "threshold_checks.jsonl").read_text().splitlines()]
    assert [c["kept"] for c in checks] == [True, False, False, True] and checks[1]["server"] == 1e300
