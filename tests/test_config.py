from pathlib import Path

import pytest

from data import nbaiot
from fediot import config
from fediot.config import validate
from federation.settings import ROBUST_AGGREGATION
from fediot.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["fedml_config.yaml", "fedml_config_synthetic.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = config.load(REPO / "config_simulation" / name)
    assert len(cfg.devices) == 9
    assert cfg.validation.threshold_k == 5.0


def test_defaults_filled():
    cfg = config.validate({"data_args": {"devices": ["Ecobee_Thermostat"]}})
    assert cfg.plan.client_count == cfg.plan.clients_per_round == 1  # null = number of devices
    # derived values live in the plan; the sections keep what the user wrote (null), as config.yaml records it
    assert cfg.train.client_num_in_total is None and cfg.train.client_num_per_round is None
    assert cfg.values["train_args"]["client_num_per_round"] is None
    assert cfg.fedml_values()["train_args"]["client_num_in_total"] == 1  # FedML gets the planned counts
    assert cfg.devices == ["Ecobee_Thermostat"]
    assert cfg.data.train_fraction == 0.6
    assert cfg.train.learning_rate == 0.003
    assert cfg.values["train_args"]["learning_rate"] == 0.003


def test_robust_switch_decides_the_defenses_in_effect():
    robust = config.validate({}).plan.defenses
    assert robust.robust and robust.aggregation == ROBUST_AGGREGATION
    assert robust.screen_norm_factor == 5.0 and robust.count_ratio_limit == 10.0
    plain = config.validate({"train_args": {"robust": False}}).plan.defenses
    assert (plain.robust, plain.aggregation, plain.screen_norm_factor, plain.count_ratio_limit) == (
        False, "fedavg", None, None)
    # a rule named explicitly is what runs, robust or not
    assert config.validate({"train_args": {"robust": False, "aggregation": "median"}}).plan.defenses.aggregation == "median"
    assert config.validate({"train_args": {"aggregation": "fedavg"}}).plan.defenses.aggregation == "fedavg"


@pytest.mark.parametrize("raw, message", [
    ({"train_args": {"robust": "yes"}}, r"train_args\.robust = 'yes'; expected true or false"),
    ({"attack_args": {"attack": "eval_lie"}}, r"attack_args\.attack = 'eval_lie'; expected one of"),
    ({"data_args": {"datset": "nbaiot"}}, r"unknown key data_args\.datset \(did you mean data_args\.dataset\?\)"),
    ({"dta_args": {}}, r"unknown section 'dta_args' \(did you mean 'data_args'\?\)"),
    ({"data_args": {"dataset": "kdd"}}, r"data_args\.dataset = 'kdd'; expected one of nbaiot, synthetic"),
    ({"data_args": {"devices": ["Danmini_Doorbel"]}}, r"unknown device 'Danmini_Doorbel' \(did you mean 'Danmini_Doorbell'\?\)"),
    ({"data_args": {"train_fraction": 0.7, "validation_fraction": 0.3}}, r"expected < 1"),
    ({"validation_args": {"threshold_k": -1}}, r"validation_args\.threshold_k = -1; expected a number >= 0"),
    ({"validation_args": {"vote_window": 4}}, r"expected an odd integer"),
    ({"train_args": {"comm_round": "ten"}}, r"train_args\.comm_round = 'ten'"),
    ({"comm_args": {"backend": "sp"}}, r"comm_args\.backend = 'sp'"),
    ({"data_args": {"devices": ["Ecobee_Thermostat", "Ennio_Doorbell"]}, "train_args": {"client_num_in_total": 9}},
     r"data_args\.devices lists 2 device\(s\) x clients_per_device 1 = 2 client\(s\) but train_args\.client_num_in_total = 9"),
    ({"data_args": {"clients_per_device": 2}, "common_args": {"training_type": "cross_silo"}, "comm_args": {"backend": "GRPC"}},
     r"a deployment has one client per board"),
    ({"data_args": {"partition": "random"}}, r"data_args\.partition = 'random'; expected one of contiguous, dirichlet"),
    ({"train_args": {"min_clients_per_round": 2, "client_num_in_total": 1, "client_num_per_round": 1},
      "data_args": {"devices": ["Ecobee_Thermostat"]}}, r"train_args\.min_clients_per_round = 2 > 1 clients per round"),
    ({"data_args": {"devices": ["Ecobee_Thermostat", "Ennio_Doorbell"]}, "train_args": {"client_num_per_round": 3}},
     r"train_args\.client_num_per_round = 3 > 2 clients"),
    ({"train_args": {"client_num_per_round": 5, "aggregation": "krum"}}, r"needs at least 7 clients per round"),
    ({"common_args": {"training_type": "cross_silo"}}, r"comm_args\.backend = 'MPI'; a deployment uses GRPC"),
    ({"comm_args": {"backend": "GRPC"}}, r"a simulation \(common_args\.training_type: simulation\) runs on MPI"),
])
def test_bad_values_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        config.validate(raw, Path("x.yaml"))


def test_missing_empty_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        config.load(tmp_path / "empty.yaml")
    (tmp_path / "bad.yaml").write_text("data_args:\n  dataset: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML at line"):
        config.load(tmp_path / "bad.yaml")


@pytest.mark.parametrize("name", ["fedml_config.yaml", "fedml_config_lan.yaml"])
def test_shipped_deployment_configs_are_valid(name):
    from deployment.ipconfig import load_ipconfig
    from fediot.rundir import repo_path
    cfg = config.load(REPO / "config" / name)
    assert cfg.comm.backend == "GRPC"
    peers = load_ipconfig(repo_path(cfg.comm.grpc_ipconfig_path))
    assert set(range(len(cfg.devices) + 1)) <= set(peers)
    assert cfg.plan.client_count == len(cfg.devices)


def test_fedml_gets_only_the_keys_it_reads():
    cfg = config.load(REPO / "config_simulation" / "fedml_config.yaml")
    flat = {k for section in cfg.fedml_values().values() for k in section}
    assert {"training_type", "backend", "comm_round", "client_num_in_total", "random_seed"} <= flat
    assert not flat & {"threshold_k", "learning_rate", "epochs", "round_timeout_s", "devices", "vote_window"}


def test_world_size_check_names_what_differs():
    cfg = config.load(REPO / "config_simulation" / "fedml_config.yaml")
    config.check_world_size(cfg, 10)
    config.check_world_size(cfg, 3)  # 2 workers for 9 clients: each trains its sampled clients in turn
    with pytest.raises(ConfigError, match=r"10 client process\(es\) were started but the config has 9 client\(s\) \(9 device\(s\) x clients_per_device 1\)\. Start at most 9 \(one per client\)"):
        config.check_world_size(cfg, 11)


def test_a_removed_key_says_why_it_went():
    with pytest.raises(config.ConfigError, match=r"validation_args\.threshold_outlier_mads was removed: each device "
                                                 r"detects with its own threshold.*; delete it"):
        config.validate({"validation_args": {"threshold_outlier_mads": 3.0}})


def test_the_number_of_boards_follows_the_device_list_alone():
    """Issue 23: scaling the loopback example took three edit-and-run cycles. With the shipped deployment config,
    changing data_args.devices is the one edit: client counts are derived, the quorum is a majority, the loopback
    ipconfig has rows for up to 9 boards."""
    import yaml

    from deployment.ipconfig import load_ipconfig
    from fediot.rundir import repo_path

    raw = yaml.safe_load((REPO / "config" / "fedml_config.yaml").read_text())
    for devices in (["Danmini_Doorbell"], nbaiot.DEVICES[:5], list(nbaiot.DEVICES)):
        raw["data_args"]["devices"] = list(devices)
        cfg = validate(raw)
        n = len(devices)
        assert (cfg.plan.client_count, cfg.plan.clients_per_round, cfg.plan.min_clients_per_round) == (
            n, n, n // 2 + 1)
        assert set(range(n + 1)) <= set(load_ipconfig(repo_path(cfg.comm.grpc_ipconfig_path)))


def test_run_directory_keeps_the_settings_as_asked_and_the_plan(tmp_path):
    """config.yaml loads back to the same settings and plan (nothing derived was written into it); plan.json holds
    what the run derived."""
    import json

    from fediot.rundir import write_config

    cfg = validate({"data_args": {"devices": "all", "clients_per_device": 4},
                    "train_args": {"client_num_per_round": 3, "robust": False}})
    write_config(tmp_path, cfg)
    again = config.load(tmp_path / "config.yaml")
    assert again.values == cfg.values and again.plan == cfg.plan
    assert again.values["data_args"]["devices"] == "all" and again.values["train_args"]["min_clients_per_round"] == 1
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert (plan["clients"], plan["clients_per_round"], plan["min_clients_per_round"], plan["model_average_rounds"]) \
        == (36, 3, 1, 10)
    assert plan["devices"] == list(nbaiot.DEVICES) and plan["defenses"]["aggregation"] == "fedavg"
