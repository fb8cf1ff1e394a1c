"""The numpy detector (model/lean.py): same scores as torch on real rows, and detect.py running without torch."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from data import nbaiot
from data.loader import read_feature_csv
from model.autoencoder import AutoEncoder
from model.detector import Detector, reconstruction_errors, train_autoencoder
from model.lean import LeanDetector
from model.normalization import Normalizer
from tests.helpers import REAL_SAMPLE, REPO
from traffic.afterimage import FeatureExtractor
from traffic.packets import read_capture
from traffic.simulator import TrafficSimulator, write_pcap

# Runs detect.main with torch and fedml made unimportable, then reports which heavy modules got loaded.
NO_TORCH = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "fedml", "torchvision"):
            raise ImportError(f"{name} blocked by the test")
sys.meta_path.insert(0, Block())
import detect
code = detect.main(sys.argv[1:])
site_packages = {m.split(".")[0] for m, mod in list(sys.modules.items())  # but the editable install's own finder
                 if "site-packages" in (getattr(mod, "__file__", None) or "") and not m.startswith("__editable__")}
heavy = ("torch", "torchvision", "fedml", "pandas", "sklearn", "grpc", "matplotlib")
print(json.dumps({"code": code, "loaded": sorted(m for m in heavy if m in sys.modules),
                  "third_party": sorted(site_packages)}))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A detector trained on the first 180 real benign rows, saved as model.pt (+ model.npz)."""
    tmp = tmp_path_factory.mktemp("lean")
    benign = read_feature_csv(REAL_SAMPLE / "benign_traffic.csv")
    norm = Normalizer.fit(benign[:180], "log1p", "zscore")
    torch.manual_seed(0)
    model = AutoEncoder(115)
    train_autoencoder(model, norm(benign[:180]), epochs=20, batch_size=64, lr=0.003, seed=0)
    det = Detector(model, norm, 3.0, 0.5, {"Danmini_Doorbell": 0.25})
    det.save(tmp / "model.pt")
    return tmp, det


def test_same_scores_as_torch_on_real_rows(trained):
    tmp, det = trained
    assert (tmp / "model.npz").is_file()
    lean = LeanDetector.load(tmp)
    rows = np.vstack([read_feature_csv(f) for f in sorted(REAL_SAMPLE.glob("*.csv"))])
    assert len(rows) == 4 * 299
    torch_scores, lean_scores = det.score(rows), lean.score(rows)
    assert np.abs(torch_scores - lean_scores).max() <= 1e-5
    assert torch_scores.max() > 1.0          # attack rows with large scores are in the comparison
    assert lean.threshold_for("Danmini_Doorbell") == 0.25 and lean.threshold_for(None) == 0.5
    assert lean.threshold_for("unknown") == det.threshold_for("unknown") == 0.5


def test_what_the_model_expects_is_its_reconstruction_in_the_features_units(trained):
    """reconstruction(): its errors are feature_errors, and what it expects, normalised again, is the input plus the
    residual whose squares they are; an alert's explanation says how far a packet's feature is from it
    (detect.explain: "40x its normal")."""
    import detect

    tmp, _ = trained
    lean = LeanDetector.load(tmp)
    rows = np.vstack([read_feature_csv(f) for f in sorted(REAL_SAMPLE.glob("*.csv"))])[::37]
    errors, expected = lean.reconstruction(rows)
    assert expected.shape == rows.shape and np.isfinite(expected).all()
    assert np.array_equal(errors, lean.feature_errors(rows))
    norm = lean.normalizer
    assert np.allclose((norm(expected) - norm(rows)) ** 2, lean.feature_errors(rows), rtol=1e-6, atol=1e-9)
    attack = int(np.argmax(lean.score(rows)))
    why = detect.explain(lean.feature_errors(rows[attack:attack + 1])[0], rows[attack], expected[attack])
    for r in why:
        i = nbaiot.CAPTURED_COLUMNS.index(r["feature"])
        assert nbaiot.group_of(r["feature"]) == r["group"]
        assert r["value"] == pytest.approx(rows[attack, i], rel=1e-3) and r["normal"] == pytest.approx(expected[attack, i],
                                                                                                         rel=1e-3)
        if "times" in r:
            assert r["times"] == pytest.approx(r["value"] / r["normal"], rel=1e-3)
    assert "its normal" in detect.why_text(why)
    # as a person reads it: never in scientific notation
    big = [{"meaning": "m", "share": 0.5, "value": 7217.0, "normal": 1.0, "times": 7217.0},
           {"meaning": "n", "share": 0.25, "value": 1.0, "normal": 40.0, "times": 0.025}]
    assert detect.why_text(big) == "m (50% of the score; 7,217x its normal); n (25% of the score; 1/40 of its normal)"


def test_a_devices_widened_scales_survive_both_files_and_score_its_rows(trained, tmp_path):
    """A device whose normalisation the federation widened (`Normalizer.widened_for`) is scored with its own scales by
    model.pt and model.npz alike; other devices and devices outside the federation with the federation's."""
    _, det = trained
    wide = det.normalizer.scale * np.where(np.arange(115) < 10, 50.0, 1.0)
    Detector(det.model, det.normalizer, 3.0, 0.5, {"Danmini_Doorbell": 0.25}, {},
             {"Danmini_Doorbell": wide}).save(tmp_path / "model.pt")
    rows = read_feature_csv(REAL_SAMPLE / "benign_traffic.csv")
    back, lean = Detector.load(tmp_path), LeanDetector.load(tmp_path)
    own = Normalizer(det.normalizer.transform, det.normalizer.method, det.normalizer.offset, wide)
    for d in (back, lean):
        assert np.abs(d.score(rows, "Danmini_Doorbell") - reconstruction_errors(det.model, own(rows))).max() <= 1e-5
        assert np.abs(d.score(rows, "Ecobee_Thermostat") - det.score(rows)).max() <= 1e-5
        assert np.abs(d.score(rows, "Danmini_Doorbell") - d.score(rows)).max() > 1e-4
    # a board keeps its newest evaluated model the same way (federation.client.LiveDetector)
    from federation.client import LiveDetector

    LiveDetector(tmp_path / "live" / "model.npz", 3.0, {}).publish(
        det.model, det.normalizer.to_dict(), wide.tolist(), 4, 0.5, "Danmini_Doorbell", 0.25)
    live = LeanDetector.load(tmp_path / "live" / "model.npz")
    assert np.array_equal(live.device_scales["Danmini_Doorbell"], wide)
    assert np.array_equal(live.normalizer.scale, det.normalizer.scale)
    bad = dict(np.load(tmp_path / "model.npz"))
    bad["device_scale0"] = -bad["device_scale0"]
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ValueError, match="device Danmini_Doorbell: 115 finite feature scales > 0 expected"):
        LeanDetector.load(tmp_path / "bad.npz")


def test_detect_runs_without_torch_and_flags_what_torch_flags(trained, tmp_path):
    tmp, det = trained
    packets = TrafficSimulator("Danmini_Doorbell", seed=5).capture(120, "gafgyt_udp", 60, 10)
    write_pcap(tmp_path / "cap.pcap", packets)
    out = tmp_path / "alerts.jsonl"
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(tmp), "--pcap", str(tmp_path / "cap.pcap"),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["code"] == 0 and report["loaded"] == []
    # what requirements-detect.txt installs (numba brings llvmlite); numba also imports scipy/cffi when they
    # happen to be installed (not in a venv made from requirements-detect.txt), setuptools adds _distutils_hack
    used_if_present = {"scipy", "cffi", "_cffi_backend", "pycparser", "_cyutility", "_distutils_hack"}
    assert set(report["third_party"]) - used_if_present <= {"numpy", "numba", "llvmlite", "dpkt", "yaml", "_yaml"}, \
        report["third_party"]
    summary = json.loads(lines[-2])
    ex = FeatureExtractor()
    torch_flags = sum(int((det.score(ex.transform(b)[:, :nbaiot.N_FEATURES]) > det.threshold_for(None)).sum())
                      for b, _ in read_capture(tmp_path / "cap.pcap"))
    assert summary["packets"] == len(packets)
    assert summary["packet_alerts"] == torch_flags > 0
    alerts = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(a["packet_alert"] for a in alerts) == torch_flags
    assert set(alerts[0]) == {"time", "host", "device", "score", "threshold", "packet_alert", "window_alert"}


def test_missing_export_is_made_once_or_explained(trained, tmp_path):
    tmp, det = trained
    det_dir = tmp_path / "old"
    det_dir.mkdir()
    (det_dir / "model.pt").write_bytes((tmp / "model.pt").read_bytes())   # a checkpoint without model.npz
    write_pcap(tmp_path / "cap.pcap", TrafficSimulator("Danmini_Doorbell", seed=6).capture(20))
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(det_dir / "model.pt"), "--pcap", str(tmp_path / "cap.pcap")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "error:" in proc.stderr and "python -m model.export" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["code"] == 2
    proc = subprocess.run([sys.executable, "-m", "detect", str(det_dir / "model.pt"), "--pcap", str(tmp_path / "cap.pcap")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "exporting" in proc.stderr and (det_dir / "model.npz").is_file()
    (det_dir / "model.npz").unlink()
    proc = subprocess.run([sys.executable, "-m", "model.export", str(det_dir)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == str(det_dir / "model.npz")


@pytest.mark.parametrize("damage", ["not_npz", "nan_weight", "wrong_width", "pickled_header", "text_weights",
                                    "unknown_transform", "string_threshold"])
def test_bad_exports_give_one_error_line(trained, tmp_path, damage):
    tmp, _ = trained
    path = tmp_path / "model.npz"
    with np.load(tmp / "model.npz") as z:
        arrays = {k: z[k] for k in z.files}
    if damage == "not_npz":
        path.write_bytes(b"this is not an npz file")
    else:
        if damage == "nan_weight":
            arrays["w0"][0, 0] = np.nan
        elif damage == "wrong_width":
            arrays["w1"] = arrays["w1"][:, :-1]
        elif damage == "text_weights":
            arrays["w2"] = np.array([["a"] * arrays["w2"].shape[1]] * arrays["w2"].shape[0])
        elif damage in ("unknown_transform", "string_threshold"):
            header = json.loads(str(arrays["header"]))
            header.update({"transform": "exp"} if damage == "unknown_transform" else {"global_threshold": "high"})
            arrays["header"] = np.array(json.dumps(header))
        else:
            arrays["header"] = np.array([{"format": "x"}], dtype=object)
        np.savez(path, **arrays)
    with pytest.raises(ValueError, match="model.npz"):
        LeanDetector.load(path)
    proc = subprocess.run([sys.executable, "-m", "detect", str(path), "--pcap", str(tmp_path / "none.pcap")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("device,threshold,t,host,score,packet,window", [
    (None, 2.5, 1500000000.1234567, bytes([10, 0, 0, 1]), 3.25, True, False),
    ("Cam", float("inf"), 1.0, bytes(16), float("nan"), False, True),
    ('x"y', 1e-9, 0.0, bytes([1, 2, 3, 4]), 1e300, True, True)])
def test_alert_lines_are_what_json_dumps_writes(device, threshold, t, host, score, packet, window):
    import ipaddress

    from detect import AlertLines
    expected = json.dumps({"time": round(t, 6), "host": str(ipaddress.ip_address(host)), "device": device, "score": score,
                           "threshold": threshold, "packet_alert": packet, "window_alert": window}) + "\n"
    assert AlertLines(device, threshold).line(t, host, score, packet, window) == expected


def test_window_vote_matches_a_per_packet_deque():
    import collections

    from detect import WindowVote
    rng = np.random.default_rng(0)
    for window in (1, 2, 5, 7):
        hosts = [bytes([int(rng.integers(0, 20))]) for _ in range(3000)]
        flags = rng.random(3000) < 0.5
        recent, expected = {}, []
        for h, f in zip(hosts, flags):
            q = recent.setdefault(h, collections.deque(maxlen=window))
            q.append(bool(f))
            expected.append(2 * sum(q) > len(q) if len(q) == window else False)
        vote = WindowVote(window)
        got = np.concatenate([vote.push(hosts[i:i + 333], flags[i:i + 333]) for i in range(0, 3000, 333)])
        assert (got == np.array(expected)).all() and got.any()


def test_a_model_of_another_width_is_refused_by_detect(tmp_path):
    from model.lean import Layer, write_lean
    rng = np.random.default_rng(0)
    layers = [Layer(rng.normal(size=(4, 10)), np.zeros(4), "tanh"), Layer(rng.normal(size=(10, 4)), np.zeros(10), "linear")]
    write_lean(tmp_path / "model.npz", layers, Normalizer("none", "zscore", np.zeros(10), np.ones(10)), 3.0, 1.0, {}, {})
    assert LeanDetector.load(tmp_path).input_dim == 10
    proc = subprocess.run([sys.executable, "-m", "detect", str(tmp_path), "--pcap", str(tmp_path / "x.pcap")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "takes 10 features" in proc.stderr and "Traceback" not in proc.stderr


def test_one_interface_two_backends_and_a_scikit_learn_estimator(tmp_path):
    """Issue 35: both detectors answer PyOD's names (decision_function, threshold_, predict) the same way, and
    AutoencoderDetector is a scikit-learn estimator (fit returns self, get_params/clone)."""
    from sklearn.base import clone

    from model.estimator import AutoencoderDetector

    rng = np.random.default_rng(0)
    benign = np.abs(rng.normal(1.0, 0.2, size=(600, 115)))
    attack = np.abs(rng.normal(4.0, 1.0, size=(100, 115)))
    est = AutoencoderDetector(epochs=3, batch_size=32, seed=1)
    assert est.fit(benign) is est and clone(est).get_params() == est.get_params()
    lean = LeanDetector.load(est.detector_.export_lean(tmp_path / "model.npz"))
    for det in (est, est.detector_, lean):
        assert det.threshold_ == pytest.approx(est.detector_.global_threshold)
        assert det.predict(attack).mean() > 0.9 and det.predict(benign[-150:]).mean() < 0.1
    assert np.allclose(lean.decision_function(attack), est.decision_function(attack), rtol=1e-4)
    assert set(np.unique(lean.predict(np.vstack([benign, attack])))) <= {0, 1}
    with pytest.raises(ValueError, match="X_validation"):
        AutoencoderDetector(epochs=1).fit(benign, X_validation=benign[:, :10])
