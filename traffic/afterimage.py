"""N-BaIoT's 115 features from packets: damped incremental statistics (Kitsune's AfterImage).

Definitions used here (see doc/features.md for where they may differ from the original extractor):

* Decay factors lambda in {5, 3, 1, 0.1, 0.01} (columns L5 ... L0.01). A statistic last updated at
  t0 is decayed at time t by d = 2^(-lambda * (t - t0)) before the new value is inserted:
  w <- d*w + 1, LS <- d*LS + x, SS <- d*SS + x^2. weight = w, mean = LS / w,
  variance = max(SS / w - mean^2, 0), std = sqrt(variance). Mean and variance do not change under
  pure decay, so a stream that is only read (not updated) needs no decay.
* Streams and the value x they aggregate (x = frame length in bytes, except jitter):
  MI_dir: source MAC + source IP; H: source IP; HH: source IP -> destination IP (directional);
  HH_jit: same channel, x = time since the previous packet on it (for the first packet: the
  packet's timestamp itself, as in the original extractor, which is why real N-BaIoT rows show
  ~1.5e9 there); HpHp: the source socket IP:port (ports 0 for non-TCP/UDP), its reverse B the
  destination socket's own stream, covariance per unordered socket pair (real rows have
  HpHp weight > HH weight, impossible for a stream inside the IP pair; doc/features.md).
* 2-D statistics (HH, HpHp) for the packet's stream A and the reverse stream B:
  weight, mean, std of A; magnitude = sqrt(mean_A^2 + mean_B^2); radius = sqrt(var_A^2 + var_B^2)
  (real rows with B unseen have radius = std_A^2);
  covariance = CF3 / w3 where, per unordered pair, CF3 and w3 decay like the other sums and each
  packet adds res_A * last_res_B (res = x - mean of its direction after the update) and 1;
  pcc = covariance / (std_A * std_B) (0 when either std is 0). A reverse direction never seen has
  weight 0, mean 0, variance 0.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from data import nbaiot
from traffic.settings import DetectArgs
from traffic.packets import PacketBatch

LAMBDAS = np.array([5.0, 3.0, 1.0, 0.1, 0.01])
# Bounded memory: detect_args.max_streams and idle_weight (their config defaults when the extractor gets none)
MAX_STREAMS = DetectArgs.max_streams
IDLE_WEIGHT = DetectArgs.idle_weight
FANOUT_WARMUP_S = DetectArgs.fanout_warmup_s
# Bumped whenever a definition changes, so feature files cached by earlier code are not reused.
FEATURES_VERSION = 3  # 3: the fan-out extension (nbaiot.FANOUT_COLUMNS)
N_L = len(LAMBDAS)
FANOUT_AT = nbaiot.N_FEATURES  # the extension's first column (after N-BaIoT's)


@njit(cache=True)
def _insert(S, i, x, t, lambdas):
    """S = (w, LS, SS, t_last) x streams x lambdas; decay then insert x at time t."""
    for l in range(lambdas.shape[0]):
        dt = t - S[3, i, l]
        if dt > 0.0 and S[0, i, l] > 0.0:
            d = 2.0 ** (-lambdas[l] * dt)
            S[0, i, l] *= d
            S[1, i, l] *= d
            S[2, i, l] *= d
        if t > S[3, i, l]:
            S[3, i, l] = t
        S[0, i, l] += 1.0
        S[1, i, l] += x
        S[2, i, l] += x * x


@njit(cache=True)
def _mean_var(S, i, l):
    w = S[0, i, l]
    if w <= 0.0:
        return 0.0, 0.0
    m = S[1, i, l] / w
    v = S[2, i, l] / w - m * m
    return m, (v if v > 0.0 else 0.0)


@njit(cache=True)
def _one_d(out, row, col, S, i, n_l):
    for l in range(n_l):
        m, v = _mean_var(S, i, l)
        out[row, col + 3 * l] = S[0, i, l]
        out[row, col + 3 * l + 1] = m
        out[row, col + 3 * l + 2] = v


@njit(cache=True)
def _two_d(out, row, col, S, a, b, P, pair, k, x, t, lambdas):
    """P = (CF3, w3, t_last, last_res dir 0, last_res dir 1) x pairs x lambdas."""
    for l in range(lambdas.shape[0]):
        ma, va = _mean_var(S, a, l)
        mb, vb = _mean_var(S, b, l)
        dt = t - P[2, pair, l]
        if dt > 0.0 and P[1, pair, l] > 0.0:
            d = 2.0 ** (-lambdas[l] * dt)
            P[0, pair, l] *= d
            P[1, pair, l] *= d
        if t > P[2, pair, l]:
            P[2, pair, l] = t
        res = x - ma
        P[0, pair, l] += res * P[4 - k, pair, l]
        P[1, pair, l] += 1.0
        P[3 + k, pair, l] = res
        cov = P[0, pair, l] / P[1, pair, l]
        sa = np.sqrt(va)
        sb = np.sqrt(vb)
        base = col + 7 * l
        out[row, base] = S[0, a, l]
        out[row, base + 1] = ma
        out[row, base + 2] = sa
        out[row, base + 3] = np.sqrt(ma * ma + mb * mb)
        out[row, base + 4] = np.sqrt(va * va + vb * vb)
        out[row, base + 5] = cov
        out[row, base + 6] = cov / (sa * sb) if (sa > 0.0 and sb > 0.0) else 0.0


@njit(cache=True)
def _fanout(out, row, col, F, i, t, new, lambdas):
    """The host's damped count of new peers (or sockets): a new one inserted, then its weight decayed to t."""
    for l in range(lambdas.shape[0]):
        dt = t - F[3, i, l]
        if dt > 0.0 and F[0, i, l] > 0.0:
            F[0, i, l] *= 2.0 ** (-lambdas[l] * dt)
        if t > F[3, i, l]:
            F[3, i, l] = t
        if new:
            F[0, i, l] += 1.0
        out[row, col + l] = F[0, i, l]


@njit(cache=True)
def _kernel(times, sizes, ids, lambdas, MI, H, HH, JIT, HP, jit_last, PHH, PHP, FPEER, FSOCK, counting_from, out):
    """ids columns: mi, h, hh, hh_rev, pair_hh, dir_hh, hp, hp_rev, pair_hp, dir_hp, src address, dst address.
    New peers and socket pairs count from packet time `counting_from` (the fan-out warm-up)."""
    n_l = lambdas.shape[0]
    for n in range(times.shape[0]):
        t = times[n]
        x = sizes[n]
        # a pair whose covariance weight is 0 was never seen (or was forgotten): a new peer / socket pair
        counting = t >= counting_from
        new_peer = counting and PHH[1, ids[n, 4], 0] == 0.0
        new_socket = counting and PHP[1, ids[n, 8], 0] == 0.0
        _insert(MI, ids[n, 0], x, t, lambdas)
        _one_d(out, n, 0, MI, ids[n, 0], n_l)
        _insert(H, ids[n, 1], x, t, lambdas)
        _one_d(out, n, 15, H, ids[n, 1], n_l)
        _insert(HH, ids[n, 2], x, t, lambdas)
        _two_d(out, n, 30, HH, ids[n, 2], ids[n, 3], PHH, ids[n, 4], ids[n, 5], x, t, lambdas)
        c = ids[n, 2]
        jitter = t - jit_last[c]
        jit_last[c] = t
        _insert(JIT, c, jitter, t, lambdas)
        _one_d(out, n, 65, JIT, c, n_l)
        _insert(HP, ids[n, 6], x, t, lambdas)
        _two_d(out, n, 80, HP, ids[n, 6], ids[n, 7], PHP, ids[n, 8], ids[n, 9], x, t, lambdas)
        _fanout(out, n, FANOUT_AT, FPEER, ids[n, 10], t, new_peer, lambdas)
        _fanout(out, n, FANOUT_AT + n_l, FSOCK, ids[n, 10], t, new_socket, lambdas)
        _fanout(out, n, FANOUT_AT + 2 * n_l, FPEER, ids[n, 11], t, new_peer, lambdas)
        _fanout(out, n, FANOUT_AT + 3 * n_l, FSOCK, ids[n, 11], t, new_socket, lambdas)


STREAM_KINDS = ("mi", "h", "hh", "hp")
STATE_MAX_STREAMS_FACTOR = 4  # a loaded state may hold at most this many times max_streams keys of a kind
LOW_WATER = 0.5  # a sweep over the cap keeps this share of max_streams: the next one is max_streams/2 new keys away (measured: bench/bench_detect_memory.py)


class _Keys:
    """Stream keys (Python ints) -> dense integer ids, assigned on first sight."""

    def __init__(self) -> None:
        self.ids: dict[int, int] = {}

    def get(self, key: int) -> int:
        i = self.ids.get(key)
        if i is None:
            i = self.ids[key] = len(self.ids)
        return i

    def order(self) -> np.ndarray:
        """Positions that put the keys (in the dict's order) in id order."""
        return np.argsort(np.fromiter(self.ids.values(), dtype=np.int64, count=len(self.ids)))

    def in_id_order(self) -> np.ndarray:
        """The keys as uint64, in id order (every kind but addresses, whose IPv6 keys are above 2^64)."""
        return np.fromiter(self.ids.keys(), dtype=np.uint64, count=len(self.ids))[self.order()]

    def map(self, keys: np.ndarray) -> np.ndarray:
        """Ids of an array of keys: one dict lookup per distinct key in the batch, not per packet."""
        uniq, inverse = np.unique(keys, return_inverse=True)
        get = self.get
        return np.fromiter((get(k) for k in uniq.tolist()), dtype=np.int64, count=len(uniq))[inverse.reshape(-1)]


# Addresses as ints: IPv4 as its 32-bit value, IPv6 above 2^128 so the two never collide.
_IPV6_TAG = 1 << 128


def _address_key(address: bytes) -> int:
    return int.from_bytes(address, "big") + (_IPV6_TAG if len(address) == 16 else 0)


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unordered pair keys of two id arrays, and each packet's direction in its pair (0: a is the lower id)."""
    forward = a <= b
    lo, hi = np.where(forward, a, b), np.where(forward, b, a)
    return (lo << 32) | hi, np.where(forward, 0, 1)


class FeatureExtractor:
    """Streaming extractor: feed packet batches in time order, get one row per packet (N-BaIoT's 115 features and
    the fan-out extension)."""

    def __init__(self, lambdas: np.ndarray = LAMBDAS, max_streams: int = MAX_STREAMS,
                 idle_weight: float = IDLE_WEIGHT, fanout_warmup_s: float = FANOUT_WARMUP_S) -> None:
        """max_streams: streams kept per kind (a flood of new sockets evicts the least recently seen, so memory stays
        bounded); idle_weight: a stream whose decayed weight at the slowest lambda is below it is dropped at the next
        sweep (doc/features.md: how either changes features — never for a stream that is kept); fanout_warmup_s: the
        fan-out extension counts nothing new in the first this many seconds of packets."""
        if max_streams < 1 or not 0.0 < idle_weight < 1.0:
            raise ValueError(f"max_streams >= 1 and 0 < idle_weight < 1 expected, got {max_streams}, {idle_weight}")
        self.max_streams, self.idle_weight = int(max_streams), float(idle_weight)
        self.evicted = {"idle": 0, "cap": 0}
        self.sweeps = 0
        self._since_sweep = 0
        self.lambdas = np.asarray(lambdas, dtype=np.float64)
        self.keys = {name: _Keys() for name in ("ip", "mac", "mi", "h", "hh", "pair_hh", "hp", "pair_hp")}
        n_l = len(self.lambdas)
        self.MI = np.zeros((4, 0, n_l))
        self.H = np.zeros((4, 0, n_l))
        self.HH = np.zeros((4, 0, n_l))
        self.JIT = np.zeros((4, 0, n_l))
        self.HP = np.zeros((4, 0, n_l))
        self.jit_last = np.zeros(0)
        self.PHH = np.zeros((5, 0, n_l))
        self.PHP = np.zeros((5, 0, n_l))
        # the fan-out extension (nbaiot.FANOUT_COLUMNS): per address, damped counts of new peers and socket pairs
        self.FPEER = np.zeros((4, 0, n_l))
        self.FSOCK = np.zeros((4, 0, n_l))
        self.fanout_warmup_s = float(fanout_warmup_s)
        self.counting_from = np.inf  # packet time from which new peers count (set by the first packet)
        self.packets = 0
        self.last_time = -np.inf  # the newest packet time seen

    @classmethod
    def configured(cls, cfg: Any) -> "FeatureExtractor":
        """An extractor with detect_args' memory bounds and fan-out warm-up (a `fediot.config.DetectArgs`): capture's
        and detect's, so the rows a device learns from are the features its detector scores."""
        return cls(max_streams=cfg.max_streams, idle_weight=cfg.idle_weight, fanout_warmup_s=cfg.fanout_warmup_s)

    def _grow(self) -> None:
        """Make room for every stream seen so far; each array grows with its own key count (a flood of new
        sockets grows the HpHp arrays, not the per-host ones), doubling to keep copies rare."""
        def grow(arr: np.ndarray, axis: int, need: int) -> np.ndarray:
            cur = arr.shape[axis]
            if cur >= need:
                return arr
            shape = list(arr.shape)
            shape[axis] = max(need, 2 * cur, 1024)
            new = np.zeros(shape)
            new[(slice(None),) * axis + (slice(0, cur),)] = arr
            return new
        n = {name: len(k.ids) for name, k in self.keys.items()}
        self.MI = grow(self.MI, 1, n["mi"])
        self.H = grow(self.H, 1, n["h"])
        self.HH = grow(self.HH, 1, n["hh"])
        self.JIT = grow(self.JIT, 1, n["hh"])
        self.jit_last = grow(self.jit_last, 0, n["hh"])
        self.HP = grow(self.HP, 1, n["hp"])
        self.PHH = grow(self.PHH, 1, n["pair_hh"])
        self.PHP = grow(self.PHP, 1, n["pair_hp"])
        self.FPEER = grow(self.FPEER, 1, n["ip"])
        self.FSOCK = grow(self.FSOCK, 1, n["ip"])

    def _addresses(self, addresses: list[bytes]) -> np.ndarray:
        """Address ids; an all-IPv4 batch is mapped with numpy (the usual case on an IoT LAN)."""
        joined = b"".join(addresses)
        if len(joined) == 4 * len(addresses):
            return self.keys["ip"].map(np.frombuffer(joined, dtype=">u4").astype(np.uint64))
        get = self.keys["ip"].get
        return np.fromiter((get(_address_key(a)) for a in addresses), dtype=np.int64, count=len(addresses))

    def _ids(self, b: PacketBatch) -> np.ndarray:
        """Per packet, the ids of its streams (columns as _kernel reads them). Keys are ints built from
        address ids, so a batch costs one dict lookup per distinct stream, not per packet."""
        k = self.keys
        n = len(b)
        sip = self._addresses(b.src_ip).astype(np.uint64)
        dip = self._addresses(b.dst_ip).astype(np.uint64)
        macs = np.frombuffer(b"".join(b.src_mac), dtype=np.uint8).reshape(n, 6).astype(np.uint64)
        mac = np.zeros(n, dtype=np.uint64)
        for byte in range(6):
            mac = (mac << np.uint64(8)) | macs[:, byte]
        sport = np.asarray(b.src_port, dtype=np.uint64)
        dport = np.asarray(b.dst_port, dtype=np.uint64)
        s32, s16 = np.uint64(32), np.uint64(16)
        ids = np.empty((n, 12), dtype=np.int64)
        ids[:, 10] = sip
        ids[:, 11] = dip
        ids[:, 0] = k["mi"].map((k["mac"].map(mac).astype(np.uint64) << s32) | sip)
        ids[:, 1] = k["h"].map(sip)
        ids[:, 2] = k["hh"].map((sip << s32) | dip)
        ids[:, 3] = k["hh"].map((dip << s32) | sip)
        pair, direction = _pair(sip, dip)
        ids[:, 4] = k["pair_hh"].map(pair)
        ids[:, 5] = direction
        ids[:, 6] = k["hp"].map((sip << s16) | sport)
        ids[:, 7] = k["hp"].map((dip << s16) | dport)
        pair, direction = _pair(ids[:, 6].astype(np.uint64), ids[:, 7].astype(np.uint64))
        ids[:, 8] = k["pair_hp"].map(pair)
        ids[:, 9] = direction
        return ids

    def warm_up(self) -> None:
        """Load (or compile) the kernel now, on no packets, so the first batch does not pay for it."""
        self._grow()
        _kernel(np.zeros(0), np.zeros(0), np.zeros((0, 12), dtype=np.int64), self.lambdas, self.MI, self.H, self.HH,
                self.JIT, self.HP, self.jit_last, self.PHH, self.PHP, self.FPEER, self.FSOCK, 0.0,
                np.zeros((0, nbaiot.N_CAPTURED_FEATURES)))

    def transform(self, batch: PacketBatch) -> np.ndarray:
        """Rows (len(batch) x 135): N-BaIoT's 115 columns in its order, then the fan-out extension
        (nbaiot.CAPTURED_COLUMNS); state carries over to the next batch."""
        out = np.zeros((len(batch), nbaiot.N_CAPTURED_FEATURES))
        if len(batch) == 0:
            return out
        if self._since_sweep >= self.max_streams or max(len(self.keys[k].ids) for k in STREAM_KINDS) > self.max_streams:
            self.sweep(float(batch.time[0]))
        if self.packets == 0:
            self.counting_from = float(batch.time[0]) + self.fanout_warmup_s
        ids = self._ids(batch)
        self._since_sweep += len(batch)
        self._grow()
        _kernel(np.asarray(batch.time, dtype=np.float64), np.asarray(batch.size, dtype=np.float64), ids,
                self.lambdas, self.MI, self.H, self.HH, self.JIT, self.HP, self.jit_last, self.PHH, self.PHP,
                self.FPEER, self.FSOCK, self.counting_from, out)
        self.packets += len(batch)
        self.last_time = max(self.last_time, float(batch.time[-1]))
        return out

    # -- memory across restarts (detect --state)
    def state(self) -> dict[str, np.ndarray]:
        """Everything the extractor remembers, as plain arrays (np.savez without pickle): a restarted board that
        loads it goes on as if it had watched without a break but saw no packet in between — each stream decayed
        over the gap, its peers not new (a fresh extractor counts every peer first seen after its warm-up as new)."""
        n = {name: len(k.ids) for name, k in self.keys.items()}

        ip = self.keys["ip"]  # IPv6 keys are above 2^128: 17 big-endian bytes each
        out = {f"keys_{name}": k.in_id_order() for name, k in self.keys.items() if name != "ip"}
        out["keys_ip"] = np.array([k.to_bytes(17, "big") for k in ip.ids], dtype="S17")[ip.order()]
        out |= {"MI": self.MI[:, :n["mi"]], "H": self.H[:, :n["h"]], "HH": self.HH[:, :n["hh"]],
                "JIT": self.JIT[:, :n["hh"]], "jit_last": self.jit_last[:n["hh"]], "HP": self.HP[:, :n["hp"]],
                "PHH": self.PHH[:, :n["pair_hh"]], "PHP": self.PHP[:, :n["pair_hp"]], "FPEER": self.FPEER[:, :n["ip"]],
                "FSOCK": self.FSOCK[:, :n["ip"]], "lambdas": self.lambdas,
                "features_version": np.array([FEATURES_VERSION], dtype=np.int64),
                "scalars": np.array([self.counting_from, self.last_time, self.packets, self.sweeps, self._since_sweep,
                                     self.evicted["idle"], self.evicted["cap"]], dtype=np.float64)}
        return {k: np.ascontiguousarray(v) for k, v in out.items()}

    def load(self, state: dict[str, np.ndarray]) -> None:
        """Take a `state()` (of this or an earlier run) after checking it whole; ValueError says what is wrong and
        leaves the extractor as it was. Checked: the feature version, every array, its dtype and shape against the key
        counts, finite values, keys unique, and every id a key holds within its table (a stale or damaged file must
        not index past an array)."""
        n_l = len(self.lambdas)
        need = ["MI", "H", "HH", "JIT", "jit_last", "HP", "PHH", "PHP", "FPEER", "FSOCK", "lambdas", "features_version",
                "scalars", *(f"keys_{name}" for name in self.keys)]
        missing = [k for k in need if k not in state]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        version = np.asarray(state["features_version"])
        if version.shape != (1,) or version.dtype.kind not in "iu" or int(version[0]) != FEATURES_VERSION:
            raise ValueError(f"made by feature version {version.tolist()}, this extractor is {FEATURES_VERSION}")
        lam = np.asarray(state["lambdas"])
        if lam.shape != self.lambdas.shape or not np.array_equal(lam, self.lambdas):
            raise ValueError(f"made with decay rates {lam.tolist()}, not this extractor's {self.lambdas.tolist()}")
        cap = STATE_MAX_STREAMS_FACTOR * self.max_streams
        keys: dict[str, list[int]] = {}
        for name in self.keys:
            arr = np.asarray(state[f"keys_{name}"])
            want = "S17" if name == "ip" else "uint64"
            if arr.ndim != 1 or arr.dtype != np.dtype(want) or len(arr) > cap:
                raise ValueError(f"keys_{name}: a 1-d {want} array of at most {cap} keys expected, got {arr.dtype} "
                                 f"{arr.shape}")
            keys[name] = [int.from_bytes(b, "big") for b in arr.tolist()] if name == "ip" else arr.tolist()
            if len(set(keys[name])) != len(keys[name]):
                raise ValueError(f"keys_{name}: repeated keys")
        n = {name: len(v) for name, v in keys.items()}
        shapes = {"MI": (4, n["mi"], n_l), "H": (4, n["h"], n_l), "HH": (4, n["hh"], n_l), "JIT": (4, n["hh"], n_l),
                  "jit_last": (n["hh"],), "HP": (4, n["hp"], n_l), "PHH": (5, n["pair_hh"], n_l),
                  "PHP": (5, n["pair_hp"], n_l), "FPEER": (4, n["ip"], n_l), "FSOCK": (4, n["ip"], n_l), "scalars": (7,)}
        arrays = {}
        for name, shape in shapes.items():
            arr = np.asarray(state[name])
            if arr.dtype != np.float64 or arr.shape != shape:
                raise ValueError(f"{name}: float64 {shape} expected, got {arr.dtype} {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"{name}: not every value is finite")
            if arr.ndim == 3 and arr.shape[0] == 4 and ((arr[0] < 0).any() or (arr[2] < 0).any()):
                raise ValueError(f"{name}: a negative weight or sum of squares")
            arrays[name] = arr
        lo32 = 0xFFFFFFFF

        def within(name: str, ids: list[int], limit: int) -> None:
            if ids and (min(ids) < 0 or max(ids) >= limit):
                raise ValueError(f"keys_{name}: an id outside its table (0..{limit - 1})")

        within("mi", [k & lo32 for k in keys["mi"]], n["ip"])
        within("mi", [k >> 32 for k in keys["mi"]], n["mac"])
        within("h", keys["h"], n["ip"])
        within("hh", [k >> 32 for k in keys["hh"]] + [k & lo32 for k in keys["hh"]], n["ip"])
        within("pair_hh", [k >> 32 for k in keys["pair_hh"]] + [k & lo32 for k in keys["pair_hh"]], n["ip"])
        within("hp", [k >> 16 for k in keys["hp"]], n["ip"])
        within("pair_hp", [k >> 32 for k in keys["pair_hp"]] + [k & lo32 for k in keys["pair_hp"]], n["hp"])
        counting_from, last_time, packets, sweeps, since, idle, capped = arrays.pop("scalars").tolist()
        if min(packets, sweeps, since, idle, capped) < 0:
            raise ValueError("scalars: a negative count")
        for name, ids in keys.items():
            self.keys[name].ids = {k: i for i, k in enumerate(ids)}
        self.MI, self.H, self.HH, self.JIT = (arrays[k].copy() for k in ("MI", "H", "HH", "JIT"))
        self.jit_last, self.HP, self.PHH, self.PHP = (arrays[k].copy() for k in ("jit_last", "HP", "PHH", "PHP"))
        self.FPEER, self.FSOCK = arrays["FPEER"].copy(), arrays["FSOCK"].copy()
        self.counting_from, self.last_time = counting_from, last_time
        self.packets, self.sweeps, self._since_sweep = int(packets), int(sweeps), int(since)
        self.evicted = {"idle": int(idle), "cap": int(capped)}
        self._grow()

    # -- bounded memory
    def tracked(self) -> dict[str, int]:
        """How many keys each table holds now."""
        return {name: len(k.ids) for name, k in self.keys.items()}

    def sweep(self, now: float) -> None:
        """Forget idle streams and, beyond max_streams per kind, the least recently seen ones; renumber what is kept.

        Kept, per kind (MI, H, HH, HpHp): a stream or pair (the HH / HpHp covariance state) whose weight decayed to
        `now` at the slowest lambda is at least idle_weight and that was updated at or after a cutoff time, and
        both directions' streams of every kept pair (a kept stream's reverse statistics and covariance are never
        lost). The cutoff is the latest that keeps at most max_streams * LOW_WATER streams and pairs of the kind
        (none when they fit). Ids are renumbered in their old order, so every pair's direction is unchanged: the
        statistics of every kept stream are exactly what they were. Cost: O(n log n) in the tracked streams, once
        per max_streams packets or when a kind is over the cap."""
        self.sweeps += 1
        self._since_sweep = 0
        slow = int(np.argmin(self.lambdas))
        lam = self.lambdas[slow]
        counts = {name: len(k.ids) for name, k in self.keys.items()}

        limit = int(self.max_streams * LOW_WATER)

        def alive(w: np.ndarray, t_last: np.ndarray) -> np.ndarray:
            return w * np.exp2(-lam * np.maximum(now - t_last, 0.0)) >= self.idle_weight

        def choose(arr: np.ndarray, n: int, pairs: np.ndarray | None = None,
                   ends: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
            """(streams kept, pairs kept) of one kind: alive, seen at or after a cutoff time chosen so that neither
            the streams (with the reverse directions of kept pairs) nor the pairs exceed `limit`."""
            w, t = arr[0, :n, slow], arr[3, :n, 0]
            live = alive(w, t)
            self.evicted["idle"] += int(((w > 0) & ~live).sum())
            if pairs is not None:
                m = ends.shape[0]
                p_live, p_t = alive(pairs[1, :m, slow], pairs[2, :m, slow]), pairs[2, :m, slow]
            else:
                p_live, p_t = np.zeros(0, dtype=bool), np.zeros(0)

            def kept(cutoff: float) -> tuple[np.ndarray, np.ndarray]:
                ks, kp = live & (t >= cutoff), p_live & (p_t >= cutoff)
                if ends is not None:
                    e = ends[kp].ravel()
                    ks[e[e >= 0]] = True
                return ks, kp

            ks, kp = kept(-np.inf)
            if max(ks.sum(), kp.sum()) > limit:  # the latest cutoff that fits: binary search over the streams' times
                times = np.unique(t[live])
                lo, hi = 0, len(times)  # kept(times[hi]) fits (hi = len: nothing kept)
                while lo < hi:
                    mid = (lo + hi) // 2
                    k_s, k_p = kept(times[mid])
                    if max(k_s.sum(), k_p.sum()) <= limit:
                        hi = mid
                    else:
                        lo = mid + 1
                ks, kp = kept(times[hi]) if hi < len(times) else (np.zeros_like(live), np.zeros_like(p_live))
                self.evicted["cap"] += int((live & ~ks).sum())
            return ks, kp

        lo32 = np.uint64(0xFFFFFFFF)
        s32, s16 = np.uint64(32), np.uint64(16)
        mi_k, h_k, hh_k, hp_k, phh_k, php_k = (self.keys[name].in_id_order()
                                               for name in ("mi", "h", "hh", "hp", "pair_hh", "pair_hp"))
        # the two directions' stream ids of each pair (HpHp pairs are keyed by hp ids, HH pairs by address ids;
        # a direction never seen has no HH id: -1)
        hp_ends = np.stack([(php_k >> s32).astype(np.int64), (php_k & lo32).astype(np.int64)], axis=1)
        hh_id = self.keys["hh"].ids
        hh_ends = np.array([[hh_id.get(k, -1), hh_id.get(((k & 0xFFFFFFFF) << 32) | (k >> 32), -1)]
                            for k in phh_k.tolist()], dtype=np.int64).reshape(-1, 2)  # pair key = lo->hi's HH key
        keep_mi, _ = choose(self.MI, counts["mi"])
        keep_h, _ = choose(self.H, counts["h"])
        keep_hh, keep_phh = choose(self.HH, counts["hh"], self.PHH, hh_ends)
        keep_hp, keep_php = choose(self.HP, counts["hp"], self.PHP, hp_ends)
        # the addresses and MACs the kept keys are made of
        addr = np.zeros(counts["ip"], dtype=bool)
        for part in (mi_k[keep_mi] & lo32, h_k[keep_h], hh_k[keep_hh] >> s32, hh_k[keep_hh] & lo32, hp_k[keep_hp] >> s16,
                     phh_k[keep_phh] >> s32, phh_k[keep_phh] & lo32):
            addr[part.astype(np.int64)] = True
        mac = np.zeros(counts["mac"], dtype=bool)
        mac[(mi_k[keep_mi] >> s32).astype(np.int64)] = True
        new_addr = np.cumsum(addr).astype(np.uint64) - np.uint64(1)  # old id -> new id (where kept), order kept
        new_mac = np.cumsum(mac).astype(np.uint64) - np.uint64(1)
        new_hp = np.cumsum(keep_hp).astype(np.uint64) - np.uint64(1)

        def remap_pairs(keys: np.ndarray, new: np.ndarray) -> np.ndarray:
            return (new[(keys >> s32).astype(np.int64)] << s32) | new[(keys & lo32).astype(np.int64)]

        def rebuild(name: str, new_keys: np.ndarray) -> None:
            self.keys[name].ids = dict(zip(new_keys.tolist(), range(len(new_keys))))

        # address keys may be wider than 64 bits (IPv6): those two tables are rebuilt from their dicts
        for name, kept, new in (("ip", addr, new_addr), ("mac", mac, new_mac)):
            items = sorted(self.keys[name].ids.items(), key=lambda kv: kv[1])
            self.keys[name].ids = {k: int(new[i]) for k, i in items if kept[i]}
        mi_new = (new_mac[(mi_k[keep_mi] >> s32).astype(np.int64)] << s32) | new_addr[(mi_k[keep_mi] & lo32).astype(np.int64)]
        rebuild("mi", mi_new)
        rebuild("h", new_addr[h_k[keep_h].astype(np.int64)])
        rebuild("hh", remap_pairs(hh_k[keep_hh], new_addr))
        hp = hp_k[keep_hp]
        rebuild("hp", (new_addr[(hp >> s16).astype(np.int64)] << s16) | (hp & np.uint64(0xFFFF)))
        rebuild("pair_hh", remap_pairs(phh_k[keep_phh], new_addr))
        rebuild("pair_hp", remap_pairs(php_k[keep_php], new_hp))

        def gather(arr: np.ndarray, axis: int, n: int, keep: np.ndarray) -> np.ndarray:
            kept = np.take(arr, np.flatnonzero(keep[:n]), axis=axis)
            shape = list(kept.shape)
            shape[axis] = max(1024, 2 * kept.shape[axis])
            out = np.zeros(shape)
            out[(slice(None),) * axis + (slice(0, kept.shape[axis]),)] = kept
            return out

        self.MI = gather(self.MI, 1, counts["mi"], keep_mi)
        self.H = gather(self.H, 1, counts["h"], keep_h)
        self.HH = gather(self.HH, 1, counts["hh"], keep_hh)
        self.JIT = gather(self.JIT, 1, counts["hh"], keep_hh)
        self.jit_last = gather(self.jit_last, 0, counts["hh"], keep_hh)
        self.HP = gather(self.HP, 1, counts["hp"], keep_hp)
        self.PHH = gather(self.PHH, 1, counts["pair_hh"], keep_phh)
        self.PHP = gather(self.PHP, 1, counts["pair_hp"], keep_php)
        self.FPEER = gather(self.FPEER, 1, counts["ip"], addr)  # an address no kept stream names loses its counts
        self.FSOCK = gather(self.FSOCK, 1, counts["ip"], addr)
