"""The extractor's definitions against relations that hold in real N-BaIoT rows (traffic/feature_relations.py).

Dataset side: the real sample rows (tests/data/nbaiot-real-sample). Our side: the extractor's rows for a
simulated capture with a scan (one socket talking to many hosts). Both must show the same relations.
"""
import subprocess
import sys

import pandas as pd
import pytest

from data import nbaiot
from tests.helpers import REAL_SAMPLE, REPO
from traffic.dataset import features_of
from traffic.feature_relations import check
from traffic.simulator import TrafficSimulator

ALWAYS = {"hh_within_host", "hphp_within_host", "jitter_same_channel", "radius_is_variance_when_alone",
          "std_is_sqrt_variance", "first_jitter_is_timestamp", "covariance_zero_when_alone"}
OCCURS = {"hh_below_host", "hphp_above_pair"}


def real_rows() -> pd.DataFrame:
    return pd.concat([pd.read_csv(f) for f in sorted(REAL_SAMPLE.glob("*.csv"))], ignore_index=True)


@pytest.fixture(scope="module")
def simulated_rows() -> pd.DataFrame:
    packets = TrafficSimulator("Danmini_Doorbell", seed=4).capture(300, "mirai_scan", 150, 20)
    _, rows = features_of(packets)
    return pd.DataFrame(rows, columns=list(nbaiot.COLUMNS))


def assert_relations(rows: pd.DataFrame) -> None:
    relations = {r.name: r for r in check(rows)}
    assert set(relations) == ALWAYS | OCCURS
    for name in ALWAYS:
        r = relations[name]
        assert r.always and r.applies > 0 and r.holds, (name, r.describe())
    for name in OCCURS:
        assert not relations[name].always and relations[name].holds, (name, relations[name].describe())


def test_relations_hold_in_real_rows():
    assert_relations(real_rows())


def test_relations_hold_in_our_extractor_output(simulated_rows):
    assert_relations(simulated_rows)


def test_the_checks_catch_the_old_definitions(simulated_rows):
    """radius = sqrt(var_A + var_B) (the std when alone) and HpHp keyed inside the IP pair both show."""
    rows = real_rows()
    for s in ("HH", "HpHp"):
        for lam in ("5", "3", "1", "0.1", "0.01"):
            rows[f"{s}_L{lam}_radius"] = rows[f"{s}_L{lam}_std"]
    relations = {r.name: r for r in check(rows)}
    assert not relations["radius_is_variance_when_alone"].holds
    rows = simulated_rows.copy()
    for lam in ("5", "3", "1", "0.1", "0.01"):
        rows[f"HpHp_L{lam}_weight"] = rows[[f"HpHp_L{lam}_weight", f"HH_L{lam}_weight"]].min(axis=1)
    assert not {r.name: r for r in check(rows)}["hphp_above_pair"].holds


def test_relations_command_reports_and_rejects_bad_files(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "traffic.feature_relations", str(REAL_SAMPLE / "benign_traffic.csv")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "radius_is_variance_when_alone  holds in all 60" in proc.stdout
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    proc = subprocess.run([sys.executable, "-m", "traffic.feature_relations", str(tmp_path / "bad.csv")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
