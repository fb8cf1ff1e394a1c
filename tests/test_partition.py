"""More clients than devices (data/partition.py): every row of a device goes to exactly one of its clients."""
import numpy as np
import pytest

from data.loader import DeviceSplit
from data.partition import partition_split
from fediot.config import client_part, device_of_client
from fediot.errors import DataError


def numbered_split(n_train=300, n_val=100, n_test=100, n_attack=60) -> DeviceSplit:
    """Rows whose first column is their position, so slices can be traced back."""
    def rows(start, n):
        return np.arange(start, start + n, dtype=np.float64)[:, None].repeat(115, axis=1)
    return DeviceSplit("Ecobee_Thermostat", rows(0, n_train), rows(10_000, n_val), rows(20_000, n_test),
                       {"mirai_udp": rows(30_000, n_attack), "gafgyt_scan": rows(40_000, 7)}, ["mirai_syn"])


@pytest.mark.parametrize("method", ["contiguous", "dirichlet"])
def test_clients_are_disjoint_consecutive_and_cover_every_row(method):
    split = numbered_split()
    parts = partition_split(split, 7, method, alpha=0.3, seed=1)
    assert [p.device for p in parts] == [f"Ecobee_Thermostat#{i}" for i in range(1, 8)]
    assert all(device_of_client(p.device) == "Ecobee_Thermostat" and client_part(p.device) == i for i, p in enumerate(parts))
    for field in ("train", "validation", "test"):
        joined = np.concatenate([getattr(p, field)[:, 0] for p in parts])
        assert np.array_equal(joined, getattr(split, field)[:, 0]), field  # in order, nothing lost, nothing twice
        assert min(len(getattr(p, field)) for p in parts) >= 2
    for name, rows in split.attacks.items():
        assert np.array_equal(np.concatenate([p.attacks[name][:, 0] for p in parts]), rows[:, 0]), name
    assert all(p.missing_attacks == ["mirai_syn"] for p in parts)
    sizes = [len(p.train) for p in parts]
    if method == "contiguous":
        assert max(sizes) - min(sizes) <= 1
    else:
        assert max(sizes) > 2 * min(sizes)  # alpha 0.3: uneven
        again = partition_split(split, 7, method, alpha=0.3, seed=1)
        assert [len(p.train) for p in again] == sizes  # seeded


def test_one_client_per_device_is_the_split_itself_and_too_many_clients_is_one_clear_error():
    split = numbered_split()
    assert partition_split(split, 1)[0] is split
    with pytest.raises(DataError, match=r"Ecobee_Thermostat: 100 validation rows cannot give 60 clients"):
        partition_split(split, 60)
