"""Feature extractor against statistics computed by hand (decay, 2-D covariance/pcc, jitter)."""
import math

import numpy as np
import pytest

from data import nbaiot
from tests.helpers import frame_batches
from traffic.afterimage import FeatureExtractor
from traffic.packets import PacketBatch

A_MAC, A, B = b"\x02" * 6, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def col(name: str) -> int:
    return nbaiot.CAPTURED_COLUMNS.index(name)


def batch(packets) -> PacketBatch:
    b = PacketBatch()
    for t, size, src, dst in packets:
        b.time.append(t)
        b.size.append(size)
        b.src_mac.append(A_MAC if src == A else b"\x03" * 6)
        b.src_ip.append(src)
        b.dst_ip.append(dst)
        b.src_port.append(1000 if src == A else 80)
        b.dst_port.append(80 if src == A else 1000)
    return b


# A->B 100 B at t=1000, B->A 300 B at 1000.5, A->B 200 B at 1001, B->A 100 B at 1001.5
PACKETS = [(1000.0, 100, A, B), (1000.5, 300, B, A), (1001.0, 200, A, B), (1001.5, 100, B, A)]


@pytest.fixture(scope="module")
def rows():
    return FeatureExtractor(fanout_warmup_s=0.0).transform(batch(PACKETS))


def test_shape_and_columns(rows):
    assert rows.shape == (4, nbaiot.N_CAPTURED_FEATURES) and nbaiot.N_CAPTURED_FEATURES == 135
    assert nbaiot.CAPTURED_COLUMNS[:115] == nbaiot.COLUMNS  # N-BaIoT's columns first, unchanged
    assert np.isfinite(rows).all()


def test_fan_out_by_hand(rows):
    """A and B meet at t=1000 (a new peer and a new socket pair for both); the other three packets are of the same
    pair and sockets (ports 0): nothing new, the counts only decay. lambda = 1: 2^-(t - 1000)."""
    for t_idx, dt in enumerate([0.0, 0.5, 1.0, 1.5]):
        for side in ("src", "dst"):
            for kind in ("peers", "sockets"):
                assert rows[t_idx, col(f"FO_{side}_{kind}_L1_weight")] == pytest.approx(2 ** -dt), (t_idx, side, kind)


def test_a_scan_shows_in_the_fan_out_and_a_chat_does_not():
    """One host SYNs 100 new addresses in 1 s (a telnet scan), another talks to one server 100 times: the scanner's
    damped count of new peers at lambda = 5 is tens, the talker's under 1."""
    scan = [(2000.0 + i / 100, 60, A, bytes([198, 51, (i // 250) % 256, i % 250 + 1])) for i in range(100)]
    chat = [(2000.0 + i / 100, 60, B, bytes([203, 0, 113, 9])) for i in range(100)]
    r_scan = FeatureExtractor(fanout_warmup_s=0.0).transform(batch(scan))
    r_chat = FeatureExtractor(fanout_warmup_s=0.0).transform(batch(chat))
    assert r_scan[-1, col("FO_src_peers_L5_weight")] > 20
    assert r_chat[-1, col("FO_src_peers_L5_weight")] < 1
    # N-BaIoT's own weight of the scanner's host stream barely tells them apart: both sent 100 packets
    assert r_scan[-1, col("H_L5_weight")] == pytest.approx(r_chat[-1, col("H_L5_weight")])


def test_a_fresh_extractor_counts_no_new_peer_during_its_warm_up():
    """detect starting (or a capture) has seen none of a device's usual peers: within detect_args.fanout_warmup_s of
    its first packet nothing counts as new, after it a new peer does."""
    scan = [(3000.0 + i, 60, A, bytes([198, 51, 100, i + 1])) for i in range(90)]
    r = FeatureExtractor(fanout_warmup_s=60.0).transform(batch(scan))
    assert (r[:60, col("FO_src_peers_L0.01_weight")] == 0).all()
    assert (r[60:, col("FO_src_peers_L0.01_weight")] > 0).all()


def test_one_direction_decay_by_hand(rows):
    # H (source IP A), lambda = 1, after packets 1 and 3 (1 s apart): decay 2^-1 = 0.5
    w = 0.5 * 1 + 1                      # 1.5
    ls = 0.5 * 100 + 200                 # 250
    ss = 0.5 * 100 ** 2 + 200 ** 2       # 45000
    mean = ls / w
    assert rows[2, col("H_L1_weight")] == pytest.approx(w)
    assert rows[2, col("H_L1_mean")] == pytest.approx(mean)
    assert rows[2, col("H_L1_variance")] == pytest.approx(ss / w - mean ** 2)
    # lambda = 0.01 barely decays: weight 2^-0.01 + 1
    assert rows[2, col("H_L0.01_weight")] == pytest.approx(2 ** -0.01 + 1)
    # MI_dir keys on MAC + IP: same stream here
    assert rows[2, col("MI_dir_L1_mean")] == pytest.approx(mean)


def test_two_direction_covariance_and_pcc_by_hand(rows):
    # Packet 4 is B->A. lambda = 1.
    std_ab = math.sqrt(45000 / 1.5 - (250 / 1.5) ** 2)          # A->B after packet 3
    w_ba, ls_ba, ss_ba = 0.5 + 1, 0.5 * 300 + 100, 0.5 * 300 ** 2 + 100 ** 2
    mean_ba = ls_ba / w_ba
    var_ba = ss_ba / w_ba - mean_ba ** 2
    # pair sums: residuals of packets 1 and 2 are 0 (first value of each direction = its mean);
    # packet 3 residual r3 = 200 - 250/1.5; packet 4 residual r4 = 100 - mean_ba; CF3 = r4 * r3
    r3 = 200 - 250 / 1.5
    r4 = 100 - mean_ba
    d = 2 ** -0.5                                               # 0.5 s between pair updates
    w3 = ((1 * d + 1) * d + 1) * d + 1
    cov = r4 * r3 / w3
    base = "HH_L1_"
    assert rows[3, col(base + "weight")] == pytest.approx(w_ba)
    assert rows[3, col(base + "mean")] == pytest.approx(mean_ba)
    assert rows[3, col(base + "std")] == pytest.approx(math.sqrt(var_ba))
    assert rows[3, col(base + "magnitude")] == pytest.approx(math.sqrt(mean_ba ** 2 + (250 / 1.5) ** 2))
    assert rows[3, col(base + "radius")] == pytest.approx(math.sqrt(var_ba ** 2 + std_ab ** 4))
    assert rows[3, col(base + "covariance")] == pytest.approx(cov)
    assert rows[3, col(base + "pcc")] == pytest.approx(cov / (math.sqrt(var_ba) * std_ab))
    assert rows[3, col(base + "pcc")] == pytest.approx(-0.1953, abs=1e-3)
    # HpHp's streams are the two sockets: the same two flows here
    assert rows[3, col("HpHp_L1_covariance")] == pytest.approx(cov)
    # a direction never seen before has mean/var 0: packet 1 magnitude = its own mean
    assert rows[0, col("HH_L1_magnitude")] == pytest.approx(100)
    assert rows[0, col("HH_L1_pcc")] == 0.0


def test_jitter_by_hand(rows):
    # first packet of a channel: jitter = its timestamp (as in the original extractor)
    assert rows[0, col("HH_jit_L1_mean")] == pytest.approx(1000.0)
    # packet 3 on A->B: jitter 1.0 s; stats of [1000, 1.0] with decay 0.5
    w, ls, ss = 1.5, 0.5 * 1000 + 1.0, 0.5 * 1000 ** 2 + 1.0
    assert rows[2, col("HH_jit_L1_weight")] == pytest.approx(w)
    assert rows[2, col("HH_jit_L1_mean")] == pytest.approx(ls / w)
    assert rows[2, col("HH_jit_L1_variance")] == pytest.approx(ss / w - (ls / w) ** 2)


def test_state_carries_across_batches(rows):
    ex = FeatureExtractor(fanout_warmup_s=0.0)
    first = ex.transform(batch(PACKETS[:2]))
    second = ex.transform(batch(PACKETS[2:]))
    assert np.allclose(np.vstack([first, second]), rows)


def test_hphp_stream_is_the_source_socket():
    """One socket sending to two hosts: its HpHp stream holds both, the IP pair's HH stream one."""
    c = bytes([10, 0, 0, 3])
    b = batch([(1000.0, 100, A, B), (1000.5, 100, A, c)])
    rows = FeatureExtractor().transform(b)
    assert rows[1, col("HH_L0.01_weight")] == pytest.approx(1.0)
    assert rows[1, col("HpHp_L0.01_weight")] == pytest.approx(2 ** (-0.01 * 0.5) + 1)
    assert rows[1, col("HpHp_L0.01_weight")] <= rows[1, col("H_L0.01_weight")]
    # destination socket (10.0.0.3:80) never sent: magnitude = own mean, radius = own variance = 0
    assert rows[1, col("HpHp_L0.01_magnitude")] == pytest.approx(100.0)
    assert rows[1, col("HpHp_L0.01_radius")] == pytest.approx(rows[1, col("HpHp_L0.01_std")] ** 2)


def test_ipv4_and_ipv6_keys_agree_across_batchings_and_never_collide():
    """Mixed batches (IPv6 -> per-packet keys) and IPv4-only batches (numpy keys) name the same streams."""
    v4, v6_same_int = bytes([0, 0, 0, 7]), bytes(15) + bytes([7])   # ::7 has the int value of 0.0.0.7
    packets = [(1000.0 + i, 100 + i, v4 if i % 3 else v6_same_int, B) for i in range(12)]
    b = PacketBatch()
    for t, size, src, dst in packets:
        b.time.append(t)
        b.size.append(size)
        b.src_mac.append(A_MAC)
        b.src_ip.append(src)
        b.dst_ip.append(dst if len(src) == 4 else bytes(15) + bytes([2]))
        b.src_port.append(1000)
        b.dst_port.append(80)
    whole = FeatureExtractor().transform(b)
    ex = FeatureExtractor()
    one_by_one = np.vstack([ex.transform(PacketBatch(*[[getattr(b, f)[i]] for f in
                                                       ("time", "size", "src_mac", "src_ip", "dst_ip", "src_port", "dst_port")]))
                            for i in range(len(b))])
    assert np.array_equal(whole, one_by_one)
    # 8 IPv4 packets and 4 IPv6 packets: the H stream of the last IPv4 packet has seen only the IPv4 ones
    assert whole[11, col("H_L0.01_weight")] == pytest.approx(sum(2 ** (-0.01 * (11 - i)) for i in range(12) if i % 3))


# ------------------------------------------------------------------------------------- bounded memory (issue 23)
NEVER = 10**12  # max_streams of an extractor that never sweeps (the reference)


def _traffic(attack: str | None = None, seconds: float = 600.0):
    from traffic.simulator import TrafficSimulator

    packets = []
    for i, device in enumerate(("Danmini_Doorbell", "Provision_PT_737E_Security_Camera")):
        sim = TrafficSimulator(device, seed=i)
        packets += sim.capture(seconds, attack=attack if i == 0 else None, attack_start_s=seconds / 2,
                               attack_duration_s=seconds / 4)
    return sorted(packets, key=lambda p: p[0])


def test_a_sweep_changes_no_feature_of_a_kept_stream():
    """Sweeping after every batch (only never-updated reverse streams are idle at a tiny idle_weight) gives the same
    rows, bit for bit, as never sweeping: kept statistics, pairs, directions and renumbered ids are exact."""
    packets = _traffic("mirai_syn", 160.0)
    plain, swept = FeatureExtractor(max_streams=NEVER), FeatureExtractor(max_streams=NEVER, idle_weight=1e-300)
    for b, _ in frame_batches(packets, 500):
        want = plain.transform(b)
        got = swept.transform(b)
        assert np.array_equal(got, want)
        swept.sweep(b.time[-1])
    assert plain.sweeps == 0 and swept.sweeps > 10


def test_idle_streams_are_forgotten_and_live_ones_keep_their_features():
    """After a long silence of one device, its streams are dropped at the next sweep; the other device's rows are
    those of an extractor that never forgets."""
    from traffic.simulator import TrafficSimulator

    first = TrafficSimulator("Danmini_Doorbell", seed=0).capture(120.0)
    other = TrafficSimulator("Provision_PT_737E_Security_Camera", seed=1).capture(4000.0)
    packets = sorted(first + other, key=lambda p: p[0])
    plain, bounded = FeatureExtractor(max_streams=NEVER), FeatureExtractor(max_streams=400)
    doorbell_ip = first[0][1][26:30]
    for b, _ in frame_batches(packets, 400):
        want, got = plain.transform(b), bounded.transform(b)
        camera = np.array([s != doorbell_ip and d != doorbell_ip for s, d in zip(b.src_ip, b.dst_ip)])
        assert np.array_equal(got[camera], want[camera])
    assert bounded.evicted == {"idle": bounded.evicted["idle"], "cap": 0} and bounded.evicted["idle"] > 0
    assert doorbell_ip not in {k.to_bytes(4, "big") for k in bounded.keys["ip"].ids if k < 2**32}
    assert doorbell_ip in {k.to_bytes(4, "big") for k in plain.keys["ip"].ids if k < 2**32}


def test_a_flood_of_new_sockets_cannot_grow_the_extractor_past_its_cap():
    """mirai_syn sprays a new source socket per packet (1,500/s for 60 s): the unbounded extractor's HpHp table grows
    with every packet; with max_streams it stays under the cap (plus one batch of new keys), and the packets of the
    camera's video stream (seen every few seconds at most: more recently than the 0.5 x max_streams newest flood
    sockets) get exactly N-BaIoT's features of the unbounded extractor."""
    packets = _traffic("mirai_syn", 240.0)
    cap, batch_size = 20_000, 256
    plain, bounded = FeatureExtractor(max_streams=NEVER), FeatureExtractor(max_streams=cap)
    largest = 0
    for b, _ in frame_batches(packets, batch_size):
        want, got = plain.transform(b), bounded.transform(b)
        largest = max(largest, max(bounded.tracked()[k] for k in ("mi", "h", "hh", "hp")))
        udp_video = np.array([p == 10000 for p in b.dst_port])
        n = nbaiot.N_FEATURES
        assert np.array_equal(got[udp_video, :n], want[udp_video, :n])
        # the fan-out counts "new" pairs: a pair the cap made the extractor forget is new again when it comes back,
        # so a kept host's counts are at least the unbounded extractor's (doc/features.md)
        assert (got[udp_video, n:] >= want[udp_video, n:] * (1 - 1e-12)).all()
    assert plain.tracked()["hp"] > 80_000 and largest <= cap + 2 * batch_size
    assert bounded.evicted["cap"] > 0 and bounded.HP.shape[1] <= 2 * cap + 2 * batch_size


def test_a_state_saved_and_loaded_goes_on_as_if_never_stopped(tmp_path):
    """detect --state: an extractor that loads another's state (through the npz file detect writes) gives the rows
    that extractor would have given, bit for bit (sweeps included: a small max_streams); a fresh one counts the same
    peers as new once its warm-up is over. A damaged or foreign state is refused whole with what is wrong, and the
    extractor is as it was."""
    import io
    import zipfile

    from detect import load_state, save_state
    from fediot.config import validate

    cfg = validate({"detect_args": {"max_streams": 300, "fanout_warmup_s": 5.0}}).detect
    packets = _traffic("mirai_scan", 160.0)
    batches = [b for b, _ in frame_batches(packets, 400)]
    half = len(batches) // 2
    whole, first = FeatureExtractor.configured(cfg), FeatureExtractor.configured(cfg)
    for b in batches[:half]:
        whole.transform(b)
        first.transform(b)
    assert first.sweeps > 0
    path = tmp_path / "state.npz"
    assert save_state(first, path) == 1
    later, fresh = FeatureExtractor.configured(cfg), FeatureExtractor.configured(cfg)
    assert load_state(later, path, cfg)
    fresh_differs = 0
    for b in batches[half:]:
        want = whole.transform(b)
        assert np.array_equal(later.transform(b), want)
        fresh_differs += int((fresh.transform(b) != want).any(axis=1).sum())
    assert fresh_differs > 0  # a restart without the state: other features
    assert later.tracked() == whole.tracked() and later.sweeps == whole.sweeps

    good = dict(np.load(path, allow_pickle=False))
    broken = {
        "another decay": {**good, "lambdas": good["lambdas"] * 2},
        "another feature version": {**good, "features_version": good["features_version"] - 1},
        "a missing table": {k: v for k, v in good.items() if k != "PHP"},
        "a table of another shape": {**good, "HH": good["HH"][:, :-1]},
        "a NaN": {**good, "MI": np.where(np.arange(good["MI"].size).reshape(good["MI"].shape) == 3, np.nan, good["MI"])},
        "a negative weight": {**good, "H": good["H"] * -1.0},
        "an id past its table": {**good, "keys_h": good["keys_h"] + np.uint64(10**6)},
        "repeated keys": {**good, "keys_pair_hp": np.concatenate([good["keys_pair_hp"][:1], good["keys_pair_hp"][:-1]])},
    }
    for what, arrays in broken.items():
        target = FeatureExtractor.configured(cfg)
        with pytest.raises(ValueError):
            target.load(arrays)
        assert target.tracked() == FeatureExtractor.configured(cfg).tracked() and target.packets == 0, what
    bad = tmp_path / "bad.npz"
    buf = io.BytesIO()
    np.savez(buf, **broken["another decay"])
    bad.write_bytes(buf.getvalue())
    claim = io.BytesIO()  # an array header claiming 8 TB, and no data: refused before anything is allocated
    np.lib.format.write_array_header_1_0(claim, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w") as zf:
        zf.writestr("MI.npy", claim.getvalue())
    for content in (None, b"not a zip", b"PK\x03\x04 truncated", bomb.getvalue()):
        if content is not None:
            bad.write_bytes(content)
        assert not load_state(FeatureExtractor.configured(cfg), bad, cfg)
