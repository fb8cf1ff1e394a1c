"""The round order of every federated run, written once: `run_federation`.

    join -> fit normaliser -> [sample, plan, train, aggregate, record, checkpoint] x rounds, with evaluations
    (validation statistics -> thresholds -> count reports -> metrics, record, checkpoint) -> finish

It drives the pure round state (`federation.state.RoundState`) and writes through the outputs
(`federation.outputs.RunOutputs`); clients are reached only through a `Grid`'s `ask`. Grids:

* `trainer.nodes.ServerNode`: FedML's communication manager on MPI ranks (simulation) or gRPC (deployment); the
  round deadline, the wait for clients, rejoin and unreachable ranks are its policies;
* `federation.inprocess.InProcessGrid`: `LocalClient`s called directly, every message through the wire format and
  its validators (tests, in seconds);
* `bench/flower_app.py`'s `FlowerGrid`: Flower's Grid (benchmark only).
"""
from __future__ import annotations

from typing import Any, Protocol

from federation.messages import S2C_EVAL_COUNTS, S2C_EVAL_STATS, S2C_TRAIN, Hello
from federation.outputs import RunOutputs
from federation.state import RoundState
from fediot.config import FedIoTConfig
from fediot.console import names_line


def quorum(cfg: FedIoTConfig) -> int:
    """How many clients must answer every request: in a deployment `train_args.min_clients_per_round`; in a
    simulation one (its ranks cannot drop silently: every client answers unless its answer is refused, and a refused
    answer must not stop the honest clients' run)."""
    return 1 if cfg.is_simulation else cfg.plan.min_clients_per_round


class RoundFailed(Exception):
    """The run cannot go on (too few clients answered); the message is for the user."""


class Grid(Protocol):
    """How the driver reaches clients. Answers are validated typed messages (`federation.messages`); a client that
    did not answer (gone, too late, its answer rejected) is in `dropped`."""

    def join(self) -> dict[str, Hello]:
        """Wait for the clients' hellos (its policy says how long and how many); client -> hello."""

    def hellos(self) -> dict[str, Hello]:
        """Every client's latest hello (a client that rejoined says hello again)."""

    def ask(self, kind: str, own: dict[str, dict[str, Any]], common: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Send request `kind` (S2C_TRAIN, S2C_EVAL_STATS, S2C_EVAL_COUNTS) to the clients in `own` (client -> its own
        fields), `common` to all; (client -> typed answer, clients that did not answer)."""

    def traffic(self) -> dict[str, Any]:
        """What the last training request cost on the wire (bytes, which worker trained whom): for the record."""

    def take_rejections(self) -> tuple[int, list[dict[str, str]], dict[str, dict[str, int]]]:
        """Messages rejected since the last call: how many, the first few (sender, reason), and how many per sender
        and kind (`monitor.refusals.RefusalTally`)."""

    def where(self) -> str:
        """Where the clients run, for the console ('' or ' on 4 worker ranks')."""

    def finish(self, error: str | None = None) -> None:
        """Tell the clients the run is over (with the error that stopped it)."""


def run_federation(state: RoundState, grid: Grid, out: RunOutputs, min_clients: int) -> None:
    """A whole federated run (or the rest of a resumed one). Raises RoundFailed when fewer than `min_clients`
    answer a request; the clients are told, and the last completed round's checkpoint is kept."""
    try:
        hellos = grid.join()
        for hello in hellos.values():
            state.client_joined(hello)
        state.fit_normalizer({c: h.feature_stats for c, h in hellos.items()})
        _notices(state, out)
        out.say(f"clients: {len(hellos)}: " + names_line(list(hellos), state.cfg.clients, 9,
                                                     lambda c: f"{c} ({hellos[c].n_train} training rows)")
                + grid.where())
        if state.evaluation_pending:  # resumed before an evaluation finished: it comes first
            _evaluate(state, grid, out, min_clients)
        while not state.done:
            for hello in grid.hellos().values():  # a client that rejoined may have re-announced its rows
                state.client_joined(hello)
            common = state.begin_round()
            updates, dropped = _ask(grid, S2C_TRAIN, state.plans(), common, min_clients, state, "train")
            line = state.finish_round(updates, dropped, grid.traffic())
            _notices(state, out)
            evaluate_now = state.evaluate_now()
            # the round's record is on disk before the checkpoint says the round is done: written now, or, when an
            # evaluation follows, carried in the checkpoint until the evaluation completes
            if not evaluate_now:
                out.record(state.close_record(*grid.take_rejections()))
            out.checkpoint(state.checkpoint())
            out.say(line)
            if evaluate_now:
                _evaluate(state, grid, out, min_clients)
        out.finish(state)
    except RoundFailed as exc:
        grid.finish(out.failure(str(exc)))
        raise RoundFailed(out.failure(str(exc))) from None
    grid.finish()


def _evaluate(state: RoundState, grid: Grid, out: RunOutputs, min_clients: int) -> None:
    """Evaluate `state.evaluated_state()` on every client's held-out rows, by counts only."""
    common = state.begin_eval()
    stats, _ = _ask(grid, S2C_EVAL_STATS, state.own_fields(state.cfg.clients), common, min_clients, state, "val")
    state.set_thresholds({c: v.stats for c, v in stats.items()})
    common, own = state.counts_request([c for c in state.cfg.clients if c in stats])
    reports, _ = _ask(grid, S2C_EVAL_COUNTS, own, common, min_clients, state, "report")
    line = state.finish_eval({c: r.report for c, r in reports.items()})
    _notices(state, out)
    out.say(line)
    out.evaluated(state.round, state.evaluator.metrics)
    out.record(state.close_record(*grid.take_rejections()))
    out.checkpoint(state.checkpoint())


def _ask(grid: Grid, kind: str, own: dict[str, dict[str, Any]], common: dict[str, Any], min_clients: int,
         state: RoundState, phase: str) -> tuple[dict[str, Any], list[str]]:
    """`grid.ask`, and the one quorum rule: fewer than `min_clients` answers stop the run. Answers are handed on in
    client-name order, whatever order they arrived in: sums of floats (statistics, thresholds) must not depend on
    which board answered first."""
    answers, dropped = grid.ask(kind, own, common)
    answers = dict(sorted(answers.items()))
    if len(answers) < min_clients:
        raise RoundFailed(f"round {state.round + 1} ({phase}): {len(answers)} client(s) answered, "
                          f"train_args.min_clients_per_round = {min_clients}; dropped: "
                          f"{names_line(dropped, state.cfg.clients) or 'none'}")
    return answers, dropped


def _notices(state: RoundState, out: RunOutputs) -> None:
    for line in state.take_notices():
        out.say(line)
