"""The detector at run time with numpy only: no torch, no FedML, so it fits a small board.

`Detector.save` writes `model.npz` beside `model.pt`: the autoencoder's layers as plain arrays, the
normalisation and the thresholds. `LeanDetector` loads it with `allow_pickle=False` (an .npz cannot run
code) and scores rows with the same arithmetic as the torch model (float32 matmuls, tanh), giving the
same scores to ~1e-6 (tests/test_lean_detector.py). `python -m model.export MODEL` writes the .npz
for a checkpoint saved before this existed.
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fediot.rundir import write_atomic_bytes
from model.interface import DetectorInterface
from model.normalization import TRANSFORMS, Normalizer, invert_transform

LEAN_FORMAT = "fediot-detector-npz-v1"
ACTIVATIONS = ("tanh", "linear")
# Rows per forward pass: large enough for fast matmuls, small enough to keep memory flat.
SCORE_BATCH_ROWS = 8192
# What a model file may hold (issue 34): the autoencoder of 135 features is ~0.2 MB; these leave room for much
# wider models and refuse a file (or an array header) claiming more before anything is allocated.
MAX_MODEL_FILE_BYTES = 64 << 20
MAX_MODEL_ARRAY_BYTES = 16 << 20
MAX_MODEL_ARRAYS = 256
NPY_HEADER_BYTES = 10_000  # numpy's own default limit for a .npy header


def lean_path(model: str | Path) -> Path:
    """Where the numpy export of a checkpoint lives: model.pt -> model.npz; a run directory -> its model.npz."""
    p = Path(model)
    if p.is_dir():
        return p / "model.npz"
    return p if p.suffix == ".npz" else p.with_suffix(".npz")


@dataclass
class Layer:
    """y = activation(x @ weight.T + bias); weight is (out, in) as in torch.nn.Linear."""

    weight: np.ndarray
    bias: np.ndarray
    activation: str


def write_lean(path: Path, layers: list[Layer], normalizer: Normalizer, threshold_k: float, global_threshold: float,
               device_thresholds: dict[str, float], meta: dict[str, Any],
               device_scales: dict[str, np.ndarray] | None = None) -> Path:
    """Write the numpy export atomically (arrays + one JSON header, no pickles)."""
    scaled = sorted(device_scales or {})
    header = {"format": LEAN_FORMAT, "activations": [la.activation for la in layers],
              "transform": normalizer.transform, "method": normalizer.method, "threshold_k": threshold_k,
              "global_threshold": global_threshold, "device_thresholds": device_thresholds, "meta": meta,
              "device_scales": scaled}
    arrays: dict[str, np.ndarray] = {"header": np.array(json.dumps(header)),
                                     "offset": np.asarray(normalizer.offset, dtype=np.float64),
                                     "scale": np.asarray(normalizer.scale, dtype=np.float64)}
    for i, device in enumerate(scaled):  # array i: header["device_scales"][i]'s own scales
        arrays[f"device_scale{i}"] = np.asarray(device_scales[device], dtype=np.float64)
    for i, la in enumerate(layers):
        arrays[f"w{i}"] = np.asarray(la.weight, dtype=np.float32)
        arrays[f"b{i}"] = np.asarray(la.bias, dtype=np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic_bytes(path, buf.getvalue())
    return path


def normalizer_for(normalizer: Normalizer, device_scales: dict[str, np.ndarray], device: str | None) -> Normalizer:
    """The device's normalisation: the federation's offset, and the device's own (widened) scales when it has them."""
    if device is None or device not in device_scales:
        return normalizer
    return Normalizer(normalizer.transform, normalizer.method, normalizer.offset, device_scales[device])


def check_npz_sizes(path: Path, max_array_bytes: int = MAX_MODEL_ARRAY_BYTES, max_total_bytes: int = MAX_MODEL_FILE_BYTES,
                    max_arrays: int = MAX_MODEL_ARRAYS) -> None:
    """Each array's size from its .npy header, before any is read: a header may claim any shape, and numpy allocates
    what it claims (a (10^6, 10^6) claim ended detect with a MemoryError). ValueError naming the array. Model files
    (the defaults) and detect's state files (detect --state)."""
    total = 0
    with zipfile.ZipFile(path) as zf:
        members = zf.infolist()
        if len(members) > max_arrays:
            raise ValueError(f"{len(members)} arrays (at most {max_arrays})")
        for info in members:
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=NPY_HEADER_BYTES)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=NPY_HEADER_BYTES)
                else:
                    raise ValueError(f"{info.filename}: npy version {version} (1.0 or 2.0 expected)")
            if dtype.hasobject:
                raise ValueError(f"{info.filename}: object arrays are not allowed")
            n = int(np.prod(shape, dtype=object)) * dtype.itemsize
            total += n
            if n > max_array_bytes or total > max_total_bytes:
                raise ValueError(f"{info.filename}: claims shape {shape} of {dtype} ({n:,} bytes; at most "
                                 f"{max_array_bytes:,} an array, {max_total_bytes:,} in all)")


def _check(ok: bool, path: Path, what: str) -> None:
    if not ok:
        raise ValueError(f"{path}: not a usable FedIoT numpy detector: {what}")


@dataclass
class LeanDetector(DetectorInterface):
    """Normalisation + autoencoder layers + thresholds, scored with numpy."""

    layers: list[Layer]
    normalizer: Normalizer
    threshold_k: float
    global_threshold: float
    device_thresholds: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    device_scales: dict[str, np.ndarray] = field(default_factory=dict)  # as model.detector.Detector's

    @classmethod
    def load(cls, model: str | Path) -> "LeanDetector":
        """Load model.npz (given directly, as the sibling of model.pt, or in a run directory); validated."""
        path = lean_path(model)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: numpy detector not found (write it with: python -m model.export {model})")
        try:
            if path.stat().st_size > MAX_MODEL_FILE_BYTES:
                raise ValueError(f"larger than {MAX_MODEL_FILE_BYTES >> 20} MB")
            check_npz_sizes(path)
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            header = json.loads(str(arrays.pop("header")))
        except (OSError, ValueError, KeyError, json.JSONDecodeError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"{path}: not a FedIoT numpy detector ({exc})") from None
        _check(isinstance(header, dict) and header.get("format") == LEAN_FORMAT, path, f"format is not {LEAN_FORMAT}")
        acts = header.get("activations")
        _check(isinstance(acts, list) and len(acts) > 0 and all(a in ACTIVATIONS for a in acts), path,
               f"activations must be a list of {ACTIVATIONS}")
        layers = []
        for i, act in enumerate(acts):
            w, b = arrays.get(f"w{i}"), arrays.get(f"b{i}")
            _check(w is not None and b is not None and w.dtype.kind in "fiu" and b.dtype.kind in "fiu" and w.ndim == 2
                   and b.shape == (w.shape[0],), path, f"layer {i}: numeric weight (out, in) and bias (out,) expected")
            _check(i == 0 or w.shape[1] == layers[-1].weight.shape[0], path, f"layer {i}: input width does not "
                   "match the previous layer's output")
            _check(bool(np.isfinite(w).all() and np.isfinite(b).all()), path, f"layer {i}: non-finite values")
            layers.append(Layer(w.astype(np.float32), b.astype(np.float32), act))
        width = layers[0].weight.shape[1]
        _check(layers[-1].weight.shape[0] == width, path, "output width differs from input width (not an autoencoder)")
        offset, scale = arrays.get("offset"), arrays.get("scale")
        _check(offset is not None and scale is not None and offset.dtype.kind in "fiu" and scale.dtype.kind in "fiu"
               and offset.shape == (width,) and scale.shape == (width,), path, f"numeric offset and scale of {width} "
               "features expected")
        _check(bool(np.isfinite(offset).all() and np.isfinite(scale).all() and (scale > 0).all()), path,
               "offset/scale must be finite with scale > 0")
        devices = header.get("device_thresholds") or {}
        _check(isinstance(devices, dict), path, "device_thresholds must be a mapping of device to threshold")
        numbers = [header.get("global_threshold"), header.get("threshold_k", 0.0), *devices.values()]
        _check(all(isinstance(t, (int, float)) and not isinstance(t, bool) and np.isfinite(t) for t in numbers), path,
               "thresholds and threshold_k must be finite numbers")
        # a score is a mean squared error: a threshold <= 0 flags every packet (an alert storm that hides real ones)
        _check(all(t > 0 for t in [header.get("global_threshold"), *devices.values()]), path,
               "thresholds must be > 0")
        _check(header.get("transform") in TRANSFORMS, path, f"transform must be one of {TRANSFORMS}")
        normalizer = Normalizer(str(header.get("transform")), str(header.get("method")), offset, scale)
        scaled = header.get("device_scales") or []
        _check(isinstance(scaled, list) and all(isinstance(d, str) for d in scaled), path,
               "device_scales must be a list of device names")
        device_scales = {}
        for i, device in enumerate(scaled):
            own = arrays.get(f"device_scale{i}")
            _check(own is not None and own.dtype.kind in "fiu" and own.shape == (width,)
                   and bool(np.isfinite(own).all() and (own > 0).all()), path,
                   f"device {device}: {width} finite feature scales > 0 expected")
            device_scales[device] = own.astype(np.float64)
        meta = header.get("meta") or {}
        return cls(layers, normalizer, float(header.get("threshold_k", 0.0)), float(header["global_threshold"]),
                   {str(k): float(v) for k, v in devices.items()}, meta if isinstance(meta, dict) else {}, device_scales)

    @property
    def input_dim(self) -> int:
        return int(self.layers[0].weight.shape[1])

    def _residuals(self, raw_rows: np.ndarray, device: str | None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(first row, normalised input, reconstruction minus input), a batch of rows at a time."""
        x_all = normalizer_for(self.normalizer, self.device_scales, device)(np.asarray(raw_rows, dtype=np.float64))
        for start in range(0, len(x_all), SCORE_BATCH_ROWS):
            x = x_all[start:start + SCORE_BATCH_ROWS]
            h = x
            for la in self.layers:
                h = h @ la.weight.T
                h += la.bias
                if la.activation == "tanh":
                    np.tanh(h, out=h)
            yield start, x, (h - x).astype(np.float64)  # as model.detector.reconstruction_errors: float64 squares

    def score(self, raw_rows: np.ndarray, device: str | None = None) -> np.ndarray:
        """Per-row reconstruction MSE of raw (un-normalised) rows of `device`, as model.detector.Detector.score."""
        out = np.empty(len(raw_rows), dtype=np.float64)
        for start, _, d in self._residuals(raw_rows, device):
            out[start:start + len(d)] = np.mean(d * d, axis=1)
        return out

    def reconstruction(self, raw_rows: np.ndarray, device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per row and feature, in one pass: the squared reconstruction error (`feature_errors`) and the value the
        model reconstructs in the features' own units (the device's normal for a row like this one): an alert's
        explanation says which features its score comes from and compares the packet's values with that normal."""
        norm = normalizer_for(self.normalizer, self.device_scales, device)
        errors = np.empty((len(raw_rows), self.input_dim), dtype=np.float64)
        expected = np.empty_like(errors)
        for start, x, d in self._residuals(raw_rows, device):
            errors[start:start + len(d)] = d * d
            expected[start:start + len(d)] = (x + d) * norm.scale + norm.offset
        return errors, invert_transform(expected, norm.transform)

    def feature_errors(self, raw_rows: np.ndarray, device: str | None = None) -> np.ndarray:
        """Per row and feature, the squared reconstruction error (their mean is `score`): which features an alert's
        score comes from."""
        out = np.empty((len(raw_rows), self.input_dim), dtype=np.float64)
        for start, _, d in self._residuals(raw_rows, device):
            out[start:start + len(d)] = d * d
        return out

