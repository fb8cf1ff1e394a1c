"""RoundState's evaluated model (tail averaging of the last model_average_rounds global models) and its
checkpoint: what is evaluated and saved, what a resumed run continues from, and the defaults."""
from pathlib import Path

import pytest
import torch

from data import nbaiot
from federation.messages import Update
from federation.state import RoundState
from fediot.config import validate
from federation.settings import SAMPLED_AVERAGE_ROUNDS
from fediot.errors import ConfigError
from model.autoencoder import AutoEncoder, state_of
from model.normalization import Normalizer

DEVICES = ["Danmini_Doorbell", "Ecobee_Thermostat", "Ennio_Doorbell"]


def config(per_device: int = 2, per_round: int | None = 2, average: int | None = 3, rounds: int = 20):
    return validate({
        "common_args": {"training_type": "simulation", "random_seed": 0},
        "data_args": {"dataset": "synthetic", "devices": DEVICES, "clients_per_device": per_device},
        "train_args": {"client_num_in_total": None, "client_num_per_round": per_round, "comm_round": rounds,
                       "model_average_rounds": average, "robust": False, "aggregation": "fedavg"},
        "comm_args": {"backend": "MPI"},
    })


def core_for(cfg, tmp_path: Path) -> RoundState:
    core = RoundState(cfg, {"source": "synthetic"}, "federated")
    rows = torch.randn(50, nbaiot.N_FEATURES).double().numpy()
    core.normalizer = Normalizer.fit(rows, "log1p", "zscore")
    return core


def random_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return state_of(AutoEncoder(nbaiot.N_FEATURES))


def train_round(core: RoundState, seed: int) -> dict[str, torch.Tensor]:
    """One round in which the only answer is `random_state(seed)`: with FedAvg that is the new global model."""
    core.begin_round()
    state = random_state(seed)
    client = core.sampled[0]
    core.finish_round({client: Update(core.round, client, state, 10, 0.1, 0.001, 0.01)}, [])
    return state


def mean_of(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: sum(s[k] for s in states) / len(states) for k in states[0]}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_evaluated_model_is_the_mean_of_the_last_rounds(tmp_path):
    core = core_for(config(average=3), tmp_path)
    globals_ = [train_round(core, seed) for seed in range(15)]
    sent = core.begin_eval()
    assert_same(sent["model"], mean_of(globals_[-3:]))
    assert core.record["eval_model_rounds"] == [13, 15]
    assert_same(state_of(core.model), globals_[-1])  # clients keep training from the latest global model
    assert_same(core.begin_round()["model"], globals_[-1])


def test_no_mean_in_the_first_half_of_the_run(tmp_path):
    """Rounds 1..10 of 20: the latest model; round 12: the mean of rounds 11 and 12 only."""
    core = core_for(config(average=3), tmp_path)
    globals_ = [train_round(core, seed) for seed in range(10)]
    assert_same(core.begin_eval()["model"], globals_[-1])
    assert "eval_model_rounds" not in core.record
    globals_ += [train_round(core, seed) for seed in range(10, 12)]
    assert_same(core.begin_eval()["model"], mean_of(globals_[10:12]))
    assert core.averaged_rounds() == [11, 12]


def test_one_round_window_is_the_latest_model(tmp_path):
    core = core_for(config(average=1), tmp_path)
    globals_ = [train_round(core, seed) for seed in range(3)]
    assert_same(core.begin_eval()["model"], globals_[-1])
    assert "eval_model_rounds" not in core.record


def test_resume_continues_the_same_average(tmp_path):
    cfg = config(average=3)
    core = core_for(cfg, tmp_path)
    globals_ = [train_round(core, seed) for seed in range(14)]
    saved = core.checkpoint()
    resumed = RoundState(cfg, {"source": "synthetic"}, "federated")
    resumed.restore(saved)
    globals_.append(train_round(resumed, 14))
    assert_same(resumed.begin_eval()["model"], mean_of(globals_[-3:]))


def test_checkpoint_with_foreign_recent_models_is_refused(tmp_path):
    core = core_for(config(average=3), tmp_path)
    train_round(core, 0)
    saved = core.checkpoint()
    saved["recent"] = [{"enc.0.weight": torch.zeros(3, 3)}]
    with pytest.raises(ConfigError, match="recent global models"):
        RoundState(config(average=3), {"source": "synthetic"}, "federated").restore(saved)
    saved["recent"] = [{k: torch.full_like(v, float("nan")) for k, v in state_of(core.model).items()}]
    with pytest.raises(ConfigError, match="recent global models"):
        RoundState(config(average=3), {"source": "synthetic"}, "federated").restore(saved)


def test_default_window_averages_only_when_a_pass_takes_many_rounds():
    # 2 of 120 clients per round: a pass over the clients takes 60 rounds
    assert config(per_device=40, per_round=2, average=None).plan.model_average_rounds == SAMPLED_AVERAGE_ROUNDS
    # 2 of 6 clients per round: 10 rounds cover every client several times; the mean would only lag
    assert config(per_device=2, per_round=2, average=None).plan.model_average_rounds == 1
    assert config(per_round=None, average=None).plan.model_average_rounds == 1  # everyone trains every round
    assert config(per_round=None, average=4).plan.model_average_rounds == 4
    with pytest.raises(ConfigError, match="model_average_rounds"):
        config(average=0)


def test_server_policy_is_composed_from_stages(tmp_path):
    """Issue 35: the aggregation is a chain of small stages built by one factory (federation/strategy.py); which
    stages a config makes, in which order."""
    from federation.strategy import build_strategy, server_policy

    def chain(**train) -> str:
        values = {"data_args": {"dataset": "synthetic", "devices": list(nbaiot.DEVICES[:3]),
                                "clients_per_device": 3}, "train_args": {"client_num_per_round": 9, **train}}
        dp = train.pop("dp", None)
        if dp:
            values["privacy_args"] = {"dp": True}
            values["train_args"].pop("dp")
        cfg = validate(values)
        return build_strategy(cfg, server_policy(cfg), dict, lambda: 1.0).describe()

    assert chain() == "CappedWeights -> Screened(trimmed_mean)"
    assert chain(robust=False) == "Screened(fedavg)"
    assert chain(federated_optimizer="FedNova") == "CappedWeights -> FedNova -> Screened(trimmed_mean)"
    assert chain(federated_optimizer="FedOpt", server_optimizer="adam") == \
        "CappedWeights -> Screened(trimmed_mean) -> ServerOpt"
    assert chain(federated_optimizer="FedOpt", dp=True) == "CappedWeights -> DPClippedMean -> ServerOpt"
