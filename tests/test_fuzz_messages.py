"""Every field of every message a client sends, fuzzed (hypothesis), into the server's receiving path and round
state: each message is either refused with a reason (by the wire format or its type's validator) or used by the
round state without an exception and without a non-finite number in what the server computes from it."""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.loader import DeviceSplit
from federation.client import LocalClient
from federation.messages import (
    C2S_HELLO, C2S_REPORT, C2S_UPDATE, C2S_VAL_STATS, Expectations, ProtocolError, RoundPlan, decode_message, typed,
)
from federation.state import RoundState
from federation.wire import WireError, encode
from fediot.config import validate as validate_config
from model.autoencoder import state_of
from tests.helpers import device_rows
from tests.rounds import DEVICES

EXAMPLES = int(__import__("os").environ.get("FEDIOT_FUZZ_EXAMPLES", "150"))


def _client(device: str, seed: int) -> LocalClient:
    rows = device_rows(device, 300, seed)
    attacks = {"mirai_udp": device_rows(device, 40, seed + 1, attack="mirai_udp")}
    return LocalClient(DeviceSplit(device, rows[:180], rows[180:240], rows[240:], attacks, []), "log1p")


@pytest.fixture(scope="module")
def world():
    """Three honest clients, a round state that has joined them, trained a round and set thresholds, and one honest
    message of each type from the first client."""
    cfg = validate_config({"common_args": {"training_type": "simulation", "random_seed": 0},
                           "data_args": {"dataset": "synthetic", "devices": DEVICES},
                           "train_args": {"client_num_in_total": 3, "client_num_per_round": 3, "comm_round": 4},
                           "comm_args": {"backend": "MPI"}})
    clients = {d: _client(d, i) for i, d in enumerate(DEVICES)}
    state = RoundState(cfg, {"source": "synthetic"}, "federated")
    hellos = {d: c.hello() for d, c in clients.items()}
    for h in hellos.values():
        state.client_joined(h)
    state.fit_normalizer({d: h.feature_stats for d, h in hellos.items()})
    common = state.begin_round()
    updates = {d: clients[d].train(common["model"], common["normalizer"],
                                   RoundPlan.from_dict(state.plans()[d]["plan"])) for d in DEVICES}
    state.finish_round(updates, [])
    common = state.begin_eval()
    val = {d: c.validation_stats(common["model"], common["normalizer"]) for d, c in clients.items()}
    state.set_thresholds(val)
    thresholds = state.evaluator.thresholds
    reports = {d: clients[d].report(thresholds["global"], thresholds["device"][d], 5) for d in DEVICES}
    first = DEVICES[0]
    messages = {
        C2S_HELLO: hellos[first].to_fields(),
        C2S_UPDATE: updates[first].to_fields(),
        C2S_VAL_STATS: {"round": state.round, "client": first,
                        "val_stats": {"count": val[first].count, "total": val[first].total,
                                      "total_sq": val[first].total_sq}},
        C2S_REPORT: {"round": state.round, "report": reports[first]},
    }
    return {"cfg": cfg, "state": state, "hellos": hellos, "updates": updates, "val": val, "reports": reports,
            "messages": messages, "expect": Expectations.of(state.model, DEVICES)}


def leaves(value: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every leaf (numbers, strings, tensors, empty containers) of a message's fields."""
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in leaves(v, (*path, k))]
    if isinstance(value, list) and value and not all(isinstance(x, (int, float)) for x in value):
        return [p for i, v in enumerate(value) for p in leaves(v, (*path, i))]
    return [path]


def replaced(fields: dict[str, Any], path: tuple, new: Any) -> dict[str, Any]:
    out = copy.deepcopy(fields)
    if not path:
        return new if isinstance(new, dict) else out
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return out


NUMBERS = st.one_of(st.integers(min_value=-10**30, max_value=10**30), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, -1, 1, 2**31, 2**63, 1e308, -1e308, 1e-308, 3.4e38, 1e200, 1e300]))
VALUES = st.one_of(
    NUMBERS, st.none(), st.booleans(), st.text(max_size=30),
    st.lists(NUMBERS, max_size=130), st.dictionaries(st.text(max_size=8), NUMBERS, max_size=4),
    st.sampled_from(["Danmini_Doorbell", "Ecobee_Thermostat", "mirai_udp", "global", "device"]),
    st.builds(lambda shape, fill: torch.full(shape, fill, dtype=torch.float32),
              st.lists(st.integers(0, 5), max_size=3).map(tuple), st.floats(width=32)),
)


def receive(world, msg_type: str, fields: dict[str, Any]):
    """The server's receiving path: bytes, decoded within the limits, validated and typed; None when refused."""
    try:
        raw = encode(msg_type, 1, 0, fields)
        got_type, _, _, got = decode_message(raw, 8 * 2**20)
        return typed(got_type, got, world["expect"])
    except (WireError, ProtocolError) as exc:
        assert str(exc)  # a refusal says why
        return None


def use(world, msg_type: str, message) -> None:
    """What the round state does with an accepted message of this type, beside the honest others' (on copies)."""
    state: RoundState = copy.deepcopy(world["state"])
    if msg_type == C2S_HELLO:
        state.normalizer = None
        state.client_joined(message)
        stats = {d: h.feature_stats for d, h in world["hellos"].items()}
        stats[message.device] = message.feature_stats
        state.fit_normalizer(stats)
        assert np.isfinite(state.normalizer.scale).all() and np.isfinite(state.normalizer.offset).all()
        assert (state.normalizer.scale > 0).all()
    elif msg_type == C2S_UPDATE:
        state.begin_round()
        state.finish_round({**world["updates"], message.client: message}, [])
        assert all(torch.isfinite(v).all() for v in state_of(state.model).values())
    elif msg_type == C2S_VAL_STATS:
        state.set_thresholds({**world["val"], message.client: message.stats})
        assert math.isfinite(state.evaluator.thresholds["global"])
        assert all(math.isfinite(t) for t in state.evaluator.thresholds["device"].values())
    elif msg_type == C2S_REPORT:
        state.finish_eval({**world["reports"], message.client: message.report})
        assert state.evaluator.metrics is not None


@pytest.mark.parametrize("msg_type", [C2S_HELLO, C2S_UPDATE, C2S_VAL_STATS, C2S_REPORT])
def test_the_honest_message_is_accepted_and_used(world, msg_type):
    message = receive(world, msg_type, world["messages"][msg_type])
    assert message is not None
    use(world, msg_type, message)


@pytest.mark.parametrize("msg_type", [C2S_HELLO, C2S_UPDATE, C2S_VAL_STATS, C2S_REPORT])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_field_of_any_client_message_is_refused_or_used_safely(world, msg_type, data):
    fields = world["messages"][msg_type]
    path = data.draw(st.sampled_from(leaves(fields)), label="field")
    new = data.draw(VALUES, label="value")
    message = receive(world, msg_type, replaced(fields, path, new))
    if message is not None:
        use(world, msg_type, message)
