import math

import numpy as np
import pytest
import torch

from model.autoencoder import AutoEncoder, hidden_sizes
from federation.state import learning_rate_for_round
from model.detector import Detector, ErrorStats, reconstruction_errors, train_autoencoder
from model.normalization import FeatureStats, Normalizer, apply_transform


def test_autoencoder_shape_matches_fediot():
    assert hidden_sizes(115) == [86, 58, 38, 29]
    m = AutoEncoder(115)
    linear = [l for l in m.modules() if isinstance(l, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linear] == [
        (115, 86), (86, 58), (58, 38), (38, 29), (29, 38), (38, 58), (58, 86), (86, 115)]
    assert sum(isinstance(l, torch.nn.Tanh) for l in m.modules()) == 6
    assert m(torch.zeros(4, 115)).shape == (4, 115)


def test_log1p_transform_is_signed():
    x = np.array([[-(math.e - 1), 0.0, math.e - 1]])
    assert np.allclose(apply_transform(x, "log1p"), [[-1.0, 0.0, 1.0]])


def test_zscore_from_stats_by_hand():
    rows = np.array([[1.0, 5.0], [3.0, 5.0]])
    n = Normalizer.fit(rows, "none", "zscore")
    assert np.allclose(n.offset, [2.0, 5.0])
    assert np.allclose(n.scale, [1.0, 1.0])  # std of [1,3] is 1; the constant column keeps scale 1
    assert np.allclose(n(np.array([[4.0, 6.0]])), [[2.0, 1.0]])


def test_minmax_by_hand():
    rows = np.array([[0.0, 10.0], [4.0, 30.0]])
    n = Normalizer.fit(rows, "none", "minmax")
    assert np.allclose(n(np.array([[2.0, 20.0], [8.0, 50.0]])), [[0.5, 0.5], [2.0, 2.0]])


def test_merged_stats_equal_pooled_stats():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(50, 7)), rng.normal(3, 2, size=(30, 7)), rng.exponential(size=(20, 7))
    merged = FeatureStats.merge([FeatureStats.of(x, "log1p") for x in (a, b, c)])
    pooled = np.concatenate([a, b, c])
    for method in ("zscore", "minmax"):
        n1 = Normalizer.from_stats(merged, "log1p", method)
        n2 = Normalizer.fit(pooled, "log1p", method)
        assert np.allclose(n1.offset, n2.offset) and np.allclose(n1.scale, n2.scale)


def test_error_stats_threshold_by_hand():
    s = ErrorStats.of(np.array([1.0, 2.0, 3.0, 4.0]))
    assert s.mean == 2.5
    assert s.std == pytest.approx(math.sqrt(1.25))
    assert s.threshold(2.0) == pytest.approx(2.5 + 2 * math.sqrt(1.25))
    merged = ErrorStats.merge([ErrorStats.of(np.array([1.0, 2.0])), ErrorStats.of(np.array([3.0, 4.0]))])
    assert merged.threshold(1.0) == pytest.approx(s.threshold(1.0))
    with pytest.raises(ValueError):
        ErrorStats().threshold(1.0)


def test_learning_rate_schedule():
    assert learning_rate_for_round(0.01, 0.5, 0.001, 0) == 0.01
    assert learning_rate_for_round(0.01, 0.5, 0.001, 2) == pytest.approx(0.0025)
    assert learning_rate_for_round(0.01, 0.5, 0.001, 10) == 0.001


def test_training_reduces_reconstruction_error():
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(400, 3))
    rows = (latent @ rng.normal(size=(3, 115))).astype(np.float32)
    torch.manual_seed(0)
    m = AutoEncoder(115)
    before = reconstruction_errors(m, rows).mean()
    losses = train_autoencoder(m, rows, epochs=15, batch_size=32, lr=0.003, seed=0)
    after = reconstruction_errors(m, rows).mean()
    assert losses[-1] < losses[0] and after < 0.2 * before


def test_detector_checkpoint_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    rows = rng.exponential(size=(50, 115))
    torch.manual_seed(0)
    det = Detector(AutoEncoder(115), Normalizer.fit(rows, "log1p", "zscore"), 3.0, 0.5, {"Ennio_Doorbell": 0.7})
    path = det.save(tmp_path / "model.pt")
    back = Detector.load(tmp_path)
    assert np.allclose(back.score(rows), det.score(rows))
    assert back.threshold_for("Ennio_Doorbell") == 0.7 and back.threshold_for("Other") == 0.5
    assert not list(tmp_path.glob(".model.pt.*"))  # no temp file left behind
    path.write_bytes(b"junk")
    with pytest.raises(Exception):
        Detector.load(path)


def _honest_parts(n: int = 9) -> list[FeatureStats]:
    rng = np.random.default_rng(3)
    return [FeatureStats.of(rng.normal(rng.uniform(-2, 2, 115), rng.uniform(0.5, 2, 115), (200 + 10 * i, 115)), "none")
            for i in range(n)]


def test_trimmed_merge_ignores_made_up_statistics_and_bounded_normaliser_limits_their_reach():
    honest = _honest_parts()
    truth = Normalizer.from_stats(FeatureStats.merge(honest), "none", "zscore")
    liars = [FeatureStats(p.count, p.total * 100, p.total_sq * 100 ** 2, p.minimum * 100, p.maximum * 100)
             for p in honest[:2]]
    parts = liars + honest[2:]
    plain = Normalizer.from_stats(FeatureStats.merge(parts), "none", "zscore")
    assert np.median(plain.scale / truth.scale) > 20  # pooled as sent: every feature squashed ~30x
    trimmed = Normalizer.from_stats(FeatureStats.trimmed_merge(parts, 2), "none", "zscore")
    assert np.abs(trimmed.scale / truth.scale - 1).max() < 0.5  # the liars are the farthest on every feature
    bounded = plain.bounded_by(trimmed, 3.0)
    assert (bounded.scale <= 3.0 * trimmed.scale + 1e-12).all() and (bounded.scale < plain.scale).all()
    # with honest clients only and room for their spread, bounding changes nothing
    honest_trimmed = Normalizer.from_stats(FeatureStats.trimmed_merge(honest, 2), "none", "zscore")
    same = truth.bounded_by(honest_trimmed, 10.0)
    assert np.array_equal(same.scale, truth.scale) and np.array_equal(same.offset, truth.offset)
    # absurd values (inf after squaring) count as farthest, not as NaN that sorts last
    absurd = [FeatureStats(1, np.full(115, 1e300), np.full(115, 1e300), np.zeros(115), np.ones(115)), *honest[1:]]
    assert np.isfinite(FeatureStats.trimmed_merge(absurd, 1).total).all()


def test_with_count_keeps_the_mean_and_trim_is_capped_for_few_parts():
    p = _honest_parts(1)[0]
    q = p.with_count(50)
    assert q.count == 50 and np.allclose(q.total / 50, p.total / p.count) and np.allclose(q.total_sq / 50, p.total_sq / p.count)
    two = _honest_parts(2)
    m = FeatureStats.trimmed_merge(two, 2)  # (2 - 1) // 2 = 0 left out: the exact merge
    assert np.array_equal(m.total, FeatureStats.merge(two).total)


def test_detector_fit_learns_from_training_rows_and_thresholds_on_validation_rows():
    """Detector.fit: the normalisation is the pooled training rows' (validation rows never touch it), the thresholds
    are the one rule (`thresholds_of`) over the validation rows' errors, and it flags what it never saw."""
    import numpy as np

    from model.detector import Detector, ErrorStats, reconstruction_errors, thresholds_of
    from model.normalization import Normalizer
    from tests.helpers import device_rows

    train = {"Danmini_Doorbell": device_rows("Danmini_Doorbell", 300, 1),
             "Ecobee_Thermostat": device_rows("Ecobee_Thermostat", 300, 2)}
    val = {"Danmini_Doorbell": device_rows("Danmini_Doorbell", 100, 3),
           "Ecobee_Thermostat": device_rows("Ecobee_Thermostat", 100, 4)}
    kw = dict(transform="log1p", normalization="zscore", epochs=3, batch_size=64, lr=0.003, seed=0, k=3.0)
    det, losses = Detector.fit(train, val, **kw)
    assert len(losses) == 3
    pooled = Normalizer.fit(np.concatenate(list(train.values())), "log1p", "zscore")
    assert np.allclose(det.normalizer.offset, pooled.offset) and np.allclose(det.normalizer.scale, pooled.scale)
    stats = {d: ErrorStats.of(reconstruction_errors(det.model, det.normalizer(rows))) for d, rows in val.items()}
    glob, own = thresholds_of(stats, 3.0)
    assert det.global_threshold == glob and det.device_thresholds == own
    other, _ = Detector.fit(train, {d: v * 3 for d, v in val.items()}, **kw)  # other validation rows: same scaling
    assert np.array_equal(other.normalizer.scale, det.normalizer.scale)
    attack = device_rows("Danmini_Doorbell", 100, 5, attack="mirai_udp")
    assert det.predict(attack, "Danmini_Doorbell").mean() > det.predict(val["Danmini_Doorbell"], "Danmini_Doorbell").mean()


def test_fused_adam_is_torchs_fused_adam_bit_for_bit_without_importing_dynamo():
    """model/adam.FusedAdam: the same weights as torch.optim.Adam(fused=True) after every step (weight decay on, one
    parameter without a gradient); and a process that trains the autoencoder never imports torch._dynamo (what
    torch.optim's optimizers import: 1.2 s and 147 MB per process)."""
    import subprocess
    import sys

    from model.adam import FusedAdam
    from tests.helpers import REPO

    def trained(make):
        torch.manual_seed(3)
        model = AutoEncoder(115)
        frozen = model.enc[0].bias
        opt = make([p for p in model.parameters()])
        x = torch.as_tensor(np.random.default_rng(0).random((640, 115)), dtype=torch.float32)
        weights = []
        for start in range(0, len(x), 32):
            opt.zero_grad()
            batch = x[start:start + 32]
            ((model(batch) - batch) ** 2).mean().backward()
            frozen.grad = None  # a parameter left out of a step: its moments and step count stay
            opt.step()
            weights.append([p.detach().clone() for p in model.parameters()])
        return weights

    ours = trained(lambda ps: FusedAdam(ps, lr=1e-3, weight_decay=1e-4))
    torchs = trained(lambda ps: torch.optim.Adam(ps, lr=1e-3, weight_decay=1e-4, fused=True))
    assert all(torch.equal(a, b) for step_a, step_b in zip(ours, torchs) for a, b in zip(step_a, step_b))
    code = ("import sys, numpy as np; from model.autoencoder import AutoEncoder; "
            "from model.detector import train_autoencoder; "
            "train_autoencoder(AutoEncoder(115), np.random.default_rng(0).random((256, 115)).astype('float32'), 2, 64, "
            "1e-3, 1e-5); print('torch._dynamo' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.split() == ["False"], proc.stderr[-2000:]
