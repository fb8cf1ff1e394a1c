import numpy as np
import pytest

from data import nbaiot
from data.loader import DeviceData, evenly_spaced, load_device, read_feature_csv, split_counts, split_device
from fediot.errors import DataError
from tests.helpers import REAL_SAMPLE, write_per_device

HEADER = ",".join(nbaiot.COLUMNS)


def test_reads_real_rows():
    x = read_feature_csv(REAL_SAMPLE / "benign_traffic.csv")
    assert x.shape == (299, 115) and x.dtype == np.float64
    assert np.isfinite(x).all()


@pytest.mark.parametrize("content, message", [
    ("", r"file is empty"),
    (HEADER + "\n", r"header only, no data rows"),
    ("a,b,c\n1,2,3\n", r"header has 3 columns; expected the 115 N-BaIoT columns"),
    (HEADER.replace("H_L5_mean", "H_L5_avg") + "\n" + ",".join(["1"] * 115) + "\n", r"column 17 is 'H_L5_avg'; expected 'H_L5_mean'"),
    (HEADER + "\n" + ",".join(["1"] * 115) + "\n" + ",".join(["1"] * 114 + ["abc"]) + "\n",
     r"line 3, column 'HpHp_L0.01_pcc': 'abc' is not a number"),
    (HEADER + "\n" + ",".join(["1"] * 115) + "\n" + ",".join(["1"] * 3 + ["inf"] + ["1"] * 111) + "\n",
     r"line 3, column 'MI_dir_L3_weight': value inf"),
    (HEADER + "\n" + ",".join(["1"] * 5 + [""] + ["1"] * 109) + "\n", r"line 2, column 'MI_dir_L3_variance': value nan"),
    (HEADER + "\n" + ",".join(["1"] * 116) + "\n", r"line 2 has 116 fields; expected 115"),
    (HEADER + "\n" + ",".join(["1"] * 115) + "\n" + ",".join(["1"] * 116) + "\n", r"line 3 has 116 fields; expected 115"),
    (HEADER + "\n" + ",".join(["1"] * 115) + "\n" * 9 + ",".join(["1"] * 100) + "\n", r"line 11 has 100 fields; expected 115"),
])
def test_bad_files_give_one_clear_error(tmp_path, content, message):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    with pytest.raises(DataError, match=message) as exc:
        read_feature_csv(f)
    assert str(f) in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        read_feature_csv(tmp_path / "nope.csv")


def test_load_device_skips_missing_attacks(tmp_path, caplog):
    write_per_device(tmp_path, "Danmini_Doorbell", skip=("mirai_syn", "gafgyt_junk"))
    d = load_device(tmp_path, "Danmini_Doorbell", attack_test_rows=5)
    assert sorted(d.missing_attacks) == ["gafgyt_junk", "mirai_syn"]
    assert len(d.attacks) == 8 and all(len(a) == 5 for a in d.attacks.values())
    assert "2 attack file(s) missing" in caplog.text and "mirai_attacks/syn.csv" in caplog.text


def test_load_device_only_reads_its_own_directory(tmp_path):
    write_per_device(tmp_path, "Ennio_Doorbell")
    d = load_device(tmp_path, "Ennio_Doorbell")
    assert set(d.attacks) == set(nbaiot.attack_names("Ennio_Doorbell"))
    with pytest.raises(DataError, match="benign traffic file not found for device Danmini_Doorbell"):
        load_device(tmp_path, "Danmini_Doorbell")


def test_chronological_split():
    rows = np.arange(100 * 115, dtype=float).reshape(100, 115)
    s = split_device(DeviceData("Danmini_Doorbell", rows), 0.6, 0.2)
    assert (len(s.train), len(s.validation), len(s.test)) == (60, 20, 20)
    assert s.train[-1, 0] < s.validation[0, 0] < s.test[0, 0]  # time order kept
    assert split_counts(10, 0.5, 0.25) == (5, 2, 3)
    with pytest.raises(DataError, match="each part needs at least"):
        split_device(DeviceData("Danmini_Doorbell", rows[:4]), 0.6, 0.2)


def test_evenly_spaced_keeps_order_and_ends():
    x = np.arange(10)[:, None]
    assert evenly_spaced(x, 4).ravel().tolist() == [0, 3, 6, 9]
    assert evenly_spaced(x, None) is x
