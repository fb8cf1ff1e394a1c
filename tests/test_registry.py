import csv

import pytest

from data import nbaiot
from tests.helpers import REAL_SAMPLE


def test_nine_devices_in_uci_order():
    assert len(nbaiot.DEVICES) == 9
    assert nbaiot.DEVICES[0] == "Danmini_Doorbell"
    assert nbaiot.DEVICES[-1] == "SimpleHome_XCS7_1003_WHT_Security_Camera"
    assert nbaiot.device_index("Ecobee_Thermostat") == 2


def test_columns_match_real_header():
    for f in REAL_SAMPLE.glob("*.csv"):
        with open(f) as fh:
            header = next(csv.reader(fh))
        assert tuple(header) == nbaiot.COLUMNS, f
    assert nbaiot.N_FEATURES == 115


def test_attack_files_per_device():
    assert len(nbaiot.attack_names("Danmini_Doorbell")) == 10
    for dev in ("Ennio_Doorbell", "Samsung_SNH_1011_N_Webcam"):
        names = nbaiot.attack_names(dev)
        assert names == ("gafgyt_combo", "gafgyt_junk", "gafgyt_scan", "gafgyt_tcp", "gafgyt_udp")
    assert str(nbaiot.attack_relpath("mirai_udpplain")) == "mirai_attacks/udpplain.csv"


def test_unknown_names_rejected():
    with pytest.raises(ValueError, match="unknown device 'Toaster'"):
        nbaiot.attack_names("Toaster")
    with pytest.raises(ValueError, match="unknown attack"):
        nbaiot.attack_relpath("mirai_combo")
