"""The client-report protocol: evaluation without raw rows on the server, counts and statistics only.

Phase 1: each client sends `ErrorStats` of its validation errors (count, sum, sum of squares).
The server derives the global threshold (merged) and each device's own threshold.
Phase 2: each client sends a `client_report`: confusion counts for both threshold modes, per attack
file, for the majority-vote window, and histograms of scores over a fixed log-spaced grid (for
ROC/PR AUC). `combine_reports` turns them into metrics.json's structure (AUCs at the histogram's
resolution). Simulation, deployment, baselines and re-evaluation all report through here.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from evaluation.metrics import majority_vote, rates
from evaluation.scores import DeviceScores
from model.threshold import HIST_EDGES, dense, histogram  # noqa: F401  (the report's histogram grid; re-exported)

def _flags_counts(scores: np.ndarray, thr: float) -> tuple[int, int]:
    flagged = int((scores > thr).sum())
    return flagged, int(len(scores) - flagged)


def client_report(s: DeviceScores, global_threshold: float | None, device_threshold: float,
                  window: int) -> dict[str, Any]:
    """Everything the server needs about one device's held-out rows, as counts.
    global_threshold=None leaves the global mode out (local-only models)."""
    modes = {}
    for mode, thr in (("global", global_threshold), ("device", device_threshold)):
        if thr is None:
            continue
        fp, tn = _flags_counts(s.test, thr)
        attacks = {}
        win = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
        wb = majority_vote(s.test > thr, window)
        win["fp"], win["tn"] = int(wb.sum()), int(len(wb) - wb.sum())
        for name, sc in s.attacks.items():
            tp, fn = _flags_counts(sc, thr)
            attacks[name] = {"tp": tp, "fn": fn}
            wa = majority_vote(sc > thr, window)
            win["tp"] += int(wa.sum())
            win["fn"] += int(len(wa) - wa.sum())
        modes[mode] = {"threshold": thr, "benign": {"fp": fp, "tn": tn}, "attacks": attacks, "window": win}
    return {
        "device": s.device,
        "missing_attacks": list(s.missing_attacks),
        "validation": {"n": int(len(s.validation)), "mse_mean": float(s.validation.mean()),
                       "mse_std": float(s.validation.std())},
        "modes": modes,
        "hist": {"benign": histogram(s.test), "attacks": {n: histogram(sc) for n, sc in s.attacks.items()}},
    }


def personal_report(s: DeviceScores, threshold: float, window: int) -> dict[str, Any]:
    """A client's personalised model's counts at its own threshold, with the histograms and validation figures the
    server checks them against, as a count report's `personal`."""
    r = client_report(s, None, threshold, window)
    return {"modes": {"personal": r["modes"]["device"]}, "validation": r["validation"], "hist": r["hist"]}


def held_out_counts(s: "DeviceScores | None" = None, validation: int = 0, test: int = 0,
                    attacks: dict[str, int] | None = None) -> dict[str, Any]:
    """The held-out row counts a client announces when it joins (from its scores' shapes, or given)."""
    if s is not None:
        validation, test = len(s.validation), len(s.test)
        attacks = {name: len(sc) for name, sc in s.attacks.items()}
    return {"validation": int(validation), "test": int(test), "attacks": dict(attacks or {})}


def auc_from_histograms(benign: np.ndarray, attack: np.ndarray) -> dict[str, float | None]:
    """ROC-AUC (ties within a bin count half) and average precision from binned scores."""
    nb, na = benign.sum(), attack.sum()
    if nb == 0 or na == 0:
        return {"roc_auc": None, "pr_auc": None}
    # P(attack score > benign score) + 0.5 P(same bin)
    benign_below = np.concatenate([[0], np.cumsum(benign)[:-1]])
    roc = float((attack * (benign_below + 0.5 * benign)).sum() / (na * nb))
    # average precision, thresholds at bin boundaries from high to low scores
    tp = np.cumsum(attack[::-1])
    fp = np.cumsum(benign[::-1])
    has = attack[::-1] > 0
    precision = tp / np.maximum(tp + fp, 1)
    ap = float((precision[has] * attack[::-1][has]).sum() / na)
    return {"roc_auc": roc, "pr_auc": ap}


def _entry(reports: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    c = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
    win = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
    per_attack: dict[str, dict[str, int]] = {}
    hb = np.zeros(len(HIST_EDGES) + 1, dtype=np.int64)
    ha = np.zeros_like(hb)
    for r in reports:
        m = r["modes"][mode]
        c["fp"] += m["benign"]["fp"]
        c["tn"] += m["benign"]["tn"]
        for name, a in m["attacks"].items():
            c["tp"] += a["tp"]
            c["fn"] += a["fn"]
            pa = per_attack.setdefault(name, {"tp": 0, "fn": 0})
            pa["tp"] += a["tp"]
            pa["fn"] += a["fn"]
        for k in win:
            win[k] += m["window"][k]
        hb += dense(r["hist"]["benign"], np.int64)
        for h in r["hist"]["attacks"].values():
            ha += dense(h, np.int64)
    out: dict[str, Any] = {**rates(c), **c, **auc_from_histograms(hb, ha)}
    out["n_benign_test"] = c["fp"] + c["tn"]
    out["n_attack_test"] = c["tp"] + c["fn"]
    out["attacks"] = {n: {"tpr": a["tp"] / (a["tp"] + a["fn"]), "n": a["tp"] + a["fn"]} for n, a in per_attack.items()}
    out["window"] = {"size": None, **rates(win), **win}
    return out


def combine_reports(reports: list[dict[str, Any]], global_threshold: float | None,
                    device_thresholds: dict[str, float], window: int, primary: str = "global",
                    device_of: Callable[[str], str] | None = None) -> dict[str, Any]:
    """metrics.json's 'global' and 'devices' parts from client reports (with `device_of` and several clients per
    device: 'clients' per client and 'devices' per device; the 'device' mode keeps each client's own threshold).

    Each entry carries its threshold modes under `modes` ('global': one threshold from merged
    validation statistics; 'device': each device's own threshold; 'personal', where reports carry a `personal`
    part: each client's personalised model at its own threshold, over the clients that have one); its top-level
    keys repeat the `primary` mode. global_threshold=None leaves out the global mode.
    """
    if primary not in ("global", "device") or (primary == "global" and global_threshold is None):
        raise ValueError(f"primary threshold mode must be 'global' (with a global threshold) or 'device', not {primary!r}")

    def entry(subset: list[dict[str, Any]]) -> dict[str, Any]:
        modes: dict[str, Any] = {}
        if global_threshold is not None:
            modes["global"] = {"threshold": global_threshold, **_entry(subset, "global")}
        modes["device"] = {"thresholds": {r["device"]: device_thresholds[r["device"]] for r in subset},
                           **_entry(subset, "device")}
        personal = [r for r in subset if "personal" in r]  # clients that personalised (validation_args)
        if personal:
            modes["personal"] = {"thresholds": {r["device"]: r["personal"]["modes"]["personal"]["threshold"]
                                                for r in personal},
                                 **_entry([r["personal"] for r in personal], "personal")}
        for m in modes.values():
            m["window"]["size"] = window
        return {"threshold_mode": primary, **modes[primary], "modes": modes}

    result: dict[str, Any] = {"global": entry(reports), "devices": {}}
    for r in reports:
        e = entry([r])
        e["missing_attacks"] = r["missing_attacks"]
        e["validation"] = r["validation"]
        result["devices"][r["device"]] = e
    if device_of is not None and any(device_of(r["device"]) != r["device"] for r in reports):
        result["clients"] = result["devices"]  # several clients per device: both levels
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in reports:
            groups.setdefault(device_of(r["device"]), []).append(r)
        result["devices"] = {}
        for device, group in groups.items():
            e = entry(group)
            e["clients"] = [r["device"] for r in group]
            e["missing_attacks"] = group[0]["missing_attacks"]
            e["validation"] = {"n": sum(r["validation"]["n"] for r in group)}
            result["devices"][device] = e
    return result


def curves_from_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """ROC curves per device and pooled, from the clients' score histograms."""
    from evaluation.curves import roc_from_histograms  # noqa: PLC0415 - matplotlib-free, but only reports need it

    out: dict[str, Any] = {}
    hb_all = np.zeros(len(HIST_EDGES) + 1, dtype=np.int64)
    ha_all = np.zeros_like(hb_all)
    for r in reports:
        hb = dense(r["hist"]["benign"], np.int64)
        ha = np.zeros_like(hb)
        for h in r["hist"]["attacks"].values():
            ha += dense(h, np.int64)
        out[r["device"]] = roc_from_histograms(hb, ha)
        hb_all += hb
        ha_all += ha
    out["all devices"] = roc_from_histograms(hb_all, ha_all)
    return {"roc": out}
