"""The evaluation stage of a federated run: thresholds -> report checks -> metrics, from the clients' numbers only.

`federation.driver._evaluate` says when: after the clients' validation-error statistics come in, `set_thresholds`;
then `counts_request` (what each client is sent to count its held-out rows); then `combine` with their count
reports. The round state (`federation.state.RoundState`) holds the model, normaliser, round and checkpoint; this
holds what an evaluation decided (thresholds, the last metrics and curves) and what a lying client's numbers may
do to it (`federation.defenses`). What it records goes into the open round's record (rounds.jsonl); what it says,
into `notices` (the console, through the driver).
"""
from __future__ import annotations

import time
from typing import Any

from evaluation.counts import combine_reports, curves_from_reports
from evaluation.metrics import METRIC_KEYS, rate_text
from evaluation.scoring import thresholds_from_stats
from federation import defenses
from fediot.config import device_of_client
from model.detector import ErrorStats
from model.threshold import rule_of


class Evaluator:
    """Thresholds from merged validation statistics, checks of the count reports, metrics of the ones kept."""

    def __init__(self, validation: Any, defense: Any) -> None:
        """validation: config's validation_args; defense: the run's defenses (`strategy.server_policy`)."""
        self.validation = validation
        self.defenses = defense
        self.thresholds: dict[str, Any] | None = None  # {"global": t, "device": {client: t}}
        self.val_counts: dict[str, int] = {}  # client -> validation rows in its last validation statistics
        self.metrics: dict[str, Any] | None = None  # of the last evaluation
        self.curves: dict[str, Any] | None = None
        self.notices: list[str] = []  # what the checks left out, for the console

    def set_thresholds(self, val_stats: dict[str, ErrorStats], announced: dict[str, dict[str, Any]],
                       record: dict[str, Any]) -> None:
        """Thresholds from the clients' validation-error statistics: each client's own (what its device detects
        with: no other client's numbers enter it) and the global one (for devices outside the federation and
        `detect` without --device): the pool of every device's statistics; with `robust`, devices weighed equally
        and the byzantine_clients highest and lowest device thresholds left out (`defenses.trimmed_global_threshold`),
        each device of several clients kept within its clients' own thresholds (`defenses.clamped_device_thresholds`),
        and a client whose statistics count other rows than it announced (`announced`: its hello) left out."""
        k, d = rule_of(self.validation), self.defenses
        self.val_counts = {c: s.count for c, s in val_stats.items()}
        glob, per_device = thresholds_from_stats(val_stats, k, device_of_client)
        if d.robust:
            excluded = defenses.validation_count_mismatches(
                val_stats, {c: announced.get(c, {}).get("held_out", {}).get("validation") for c in val_stats})
            self.notices.extend(f"global threshold leaves out {c}: {why}" for c, why in sorted(excluded.items()))
            if excluded:
                record["threshold_excluded"] = excluded
            consistent = {c: s for c, s in val_stats.items() if c not in excluded} or dict(val_stats)
            glob, pooled, _ = defenses.trimmed_global_threshold(consistent, k, d.byzantine_clients)
            per_device, clamped = defenses.clamped_device_thresholds(val_stats, k, device_of_client, per_device,
                                                                     d.byzantine_clients)
            if clamped:
                record["device_threshold_clamped"] = clamped
            record["global_threshold_from"] = pooled
        self.thresholds = {"global": glob, "device": per_device}

    def counts_request(self, round_done: int, clients: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """What `clients` are sent to count their rows: (the same for all: the round, the global threshold and the
        vote window; client -> its own threshold); a client learns no other device's threshold."""
        return ({"round": round_done, "global_threshold": self.thresholds["global"],
                 "window": self.validation.vote_window},
                {c: {"device_threshold": self.thresholds["device"][c]} for c in clients})

    def combine(self, reports: dict[str, dict[str, Any]], announced: dict[str, dict[str, Any]],
                record: dict[str, Any], round_done: int, started: float) -> str:
        """Combine the clients' count reports into metrics (kept for the outputs); the summary line."""
        usable = [reports[d] for d in sorted(reports) if d in self.thresholds["device"]]
        if self.defenses.robust:
            usable = self._consistent(usable, announced, record)
        metrics = combine_reports(usable, self.thresholds["global"], self.thresholds["device"],
                                  self.validation.vote_window, "device", device_of_client)
        g = metrics["global"]
        record["eval"] = {"global_threshold": {k: g["modes"]["global"][k] for k in METRIC_KEYS},
                          "device_threshold": {k: g["modes"]["device"][k] for k in METRIC_KEYS},
                          **({"personal": {k: g["modes"]["personal"][k] for k in METRIC_KEYS}}
                             if "personal" in g["modes"] else {}),
                          "devices": sorted(metrics["devices"])}
        record["eval_seconds"] = round(time.monotonic() - started, 4)
        glob = g["modes"]["global"]
        line = (f"evaluation after round {round_done}: {len(usable)} "
                f"{'device' if len(usable) == len(metrics['devices']) else 'client'}(s)  TPR {rate_text('tpr', g)}  "
                f"FPR {rate_text('fpr', g)}  F1 {rate_text('f1', g)}  (global threshold: TPR {rate_text('tpr', glob)} "
                f"FPR {rate_text('fpr', glob)})")
        if "personal" in g["modes"]:
            mine = g["modes"]["personal"]
            line += f"  (personalised: TPR {rate_text('tpr', mine)} FPR {rate_text('fpr', mine)})"
        self.metrics, self.curves = metrics, curves_from_reports(usable)
        return line

    def _consistent(self, reports: list[dict[str, Any]], announced: dict[str, dict[str, Any]],
                    record: dict[str, Any]) -> list[dict[str, Any]]:
        """The reports that can be true (`defenses.report_problems`); the others are said, recorded and left out."""
        kept, rejected = [], {}
        for r in reports:
            device = r["device"]
            said = announced.get(device)
            problems = ["it never announced its held-out rows"] if said is None else defenses.report_problems(
                r, said["held_out"], self.val_counts.get(device),
                {"global": self.thresholds["global"], "device": self.thresholds["device"][device]},
                self.validation.vote_window)
            if problems:
                more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
                rejected[device] = "; ".join(problems[:3]) + more
                self.notices.append(f"count report of {device} left out: {rejected[device]}")
                continue
            if "personal" in r:  # its personalised model's counts against its own histograms, at its own threshold
                p = r["personal"]
                wrong = defenses.report_problems(p, said["held_out"], None,
                                                 {"personal": p["modes"]["personal"]["threshold"]},
                                                 self.validation.vote_window)
                if wrong:
                    rejected[f"{device} (personal)"] = why = "; ".join(wrong[:3])
                    self.notices.append(f"personalised count report of {device} left out: {why}")
                    r = {k: v for k, v in r.items() if k != "personal"}
            kept.append(r)
        if rejected:
            record["reports_rejected"] = rejected
        return kept

    def take_notices(self) -> list[str]:
        notices, self.notices = self.notices, []
        return notices
