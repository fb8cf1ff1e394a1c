"""report.md and compare: figures exist, are valid PNGs and are not blank."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from evaluation.curves import curves_from_scores
from evaluation.scores import DeviceScores
from evaluation.scoring import evaluate, thresholds
from evaluation.report import write_report
from fediot.rundir import append_jsonl, write_json
from tests.helpers import REPO


def fixture_run(root: Path, seed: int, kind: str = "federated") -> Path:
    """A run directory as the simulation writes it, from made-up scores."""
    rng = np.random.default_rng(seed)
    scores = [DeviceScores(d, rng.lognormal(-2, 0.4, 100), rng.lognormal(-2, 0.4, 100),
                           {a: rng.lognormal(-0.5 + i * 0.2, 0.6, 50) for i, a in enumerate(attacks)},
                           [] if len(attacks) == 3 else ["mirai_syn"])
              for d, attacks in (("Danmini_Doorbell", ["gafgyt_udp", "mirai_ack", "mirai_syn"]),
                                 ("Ennio_Doorbell", ["gafgyt_udp", "gafgyt_scan"]))]
    glob, per_dev = thresholds(scores, 3.0)
    run = root / f"run{seed}"
    run.mkdir(parents=True)
    write_json(run / "metrics.json", {"data": {"source": "synthetic", "synthetic": True}, "kind": kind,
                                      **evaluate(scores, glob, per_dev, 5)})
    write_json(run / "curves.json", curves_from_scores(scores))
    for r in range(1, 6):
        rec = {"round": r, "client_losses": {"Danmini_Doorbell": 0.5 / r, "Ennio_Doorbell": 0.4 / r}, "wall_time_s": 1.0}
        if r % 2 == 0 or r == 5:
            rec["eval"] = {m: {"tpr": 0.9 + 0.01 * r, "fpr": 0.05 / r} for m in ("global_threshold", "device_threshold")}
        append_jsonl(run / "rounds.jsonl", rec)
    return run


def assert_png_with_content(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("L"), dtype=float)
    assert pixels.std() > 10, f"{path} looks blank"
    assert (pixels < 128).mean() > 0.005, f"{path} has almost no dark pixels (no axes or data)"


def test_report_from_fixture_run(tmp_path):
    run = fixture_run(tmp_path, 1)
    report = write_report(run)
    text = report.read_text()
    assert "SYNTHETIC DATA" in text
    figures = re.findall(r"\]\((figures/[^)]+\.png)\)", text)
    assert {Path(f).stem.split("_", 1)[1] for f in figures} == {"training", "roc", "devices", "attacks"}
    for f in figures:
        assert_png_with_content(run / f)
    assert "| Ennio_Doorbell |" in text and "mirai_syn" in text


def test_report_for_baselines_layout_includes_comparison(tmp_path):
    fed = fixture_run(tmp_path, 2)
    base = tmp_path / "base"
    for kind, seed in (("centralized", 3), ("local", 4)):
        src = fixture_run(tmp_path / kind, seed, kind)
        (base / kind).mkdir(parents=True)
        m = json.loads((src / "metrics.json").read_text())
        m["train_losses"] = [1.0, 0.5, 0.2]
        write_json(base / kind / "metrics.json", m)
        (base / kind / "curves.json").write_text((src / "curves.json").read_text())
    write_json(base / "comparison.json", {"federated_run": str(fed)})
    text = write_report(base).read_text()
    assert "| federated |" in text and "| centralized |" in text and "| local |" in text
    for f in re.findall(r"\]\((figures/[^)]+\.png)\)", text):
        assert_png_with_content(base / f)


def test_compare_two_runs(tmp_path):
    a, b = fixture_run(tmp_path, 5), fixture_run(tmp_path, 6)
    out = tmp_path / "cmp"
    proc = subprocess.run([sys.executable, "-m", "compare", str(a), str(b), "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    md = (out / "compare.md").read_text()
    assert "run5 / federated" in md and "run6 / federated" in md
    assert_png_with_content(out / "compare.png")
    assert_png_with_content(out / "compare_rounds.png")


def test_compare_rejects_non_run_dir(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "compare", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no metrics.json" in proc.stderr
