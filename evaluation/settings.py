"""validation_args: the threshold rule and the evaluation schedule (model.threshold, evaluation/, the client's vote)."""
from __future__ import annotations

from dataclasses import dataclass

from fediot.settings import is_int, is_num, setting


@dataclass(frozen=True)
class ValidationArgs:
    """Threshold rule and evaluation schedule."""

    frequency_of_the_test: int = setting(5, 'evaluate every N rounds (and always after the last round)', check=(lambda v: is_int(v) and v >= 1, 'an integer >= 1'))
    threshold_k: float = setting(5.0, 'threshold = mean + k * std of per-row MSE on held-out benign validation rows; each device detects with its own (why 5: doc/config.md)', check=(lambda v: is_num(v) and v >= 0, 'a number >= 0'))
    threshold_rule: str = setting('auto', "budget: at most false_alerts_per_day window alerts a day on held-out benign rows (needs the rows' rate: captured rows); mean_std: mean + threshold_k x std; auto: budget where rows carry a rate, else mean_std", choices=('auto', 'budget', 'mean_std'))
    false_alerts_per_day: float = setting(1.0, 'the false-alarm budget of the budget rule: false alerts (window alerts; with alert_gap_s > 0, those closer than it count as one) per device per day on benign traffic like its held-out rows', check=(lambda v: is_num(v) and v > 0, 'a number > 0'))
    alert_gap_s: float = setting(0.0, 'budget rule: window alerts closer together than this count as one false alert (declustering); 0 = every window alert counts', check=(lambda v: is_num(v) and v >= 0, 'a number >= 0'))
    board_threshold_ratio: float = setting(4.0, "a board keeps the federation's threshold for its device only within this factor of the one its own validation rows give, else detects at its own and records it", check=(lambda v: is_num(v) and v >= 1, 'a number >= 1'))
    min_tail_rows: int = setting(20, 'budget rule: the empirical quantile where at least this many held-out window scores lie above it; fewer: a fitted tail, then the highest score / mean + k std', check=(lambda v: is_int(v) and v >= 5, 'an integer >= 5'))
    max_tail_shape: float = setting(1.0, "budget rule: the fitted generalised Pareto shape is capped here: a shape >= 1 is a tail without a mean, whose extrapolation to a rare budget could land anywhere", check=(lambda v: is_num(v) and 0 < v <= 2, 'a number in (0, 2]'))
    tail_level: float = setting(0.98, "budget rule: where the budget asks for fewer than min_tail_rows of the held-out window scores above the threshold, a generalised Pareto tail is fitted to those above this quantile (SPOT's 0.98)", check=(lambda v: is_num(v) and 0.5 <= v < 1, 'a number in [0.5, 1)'))
    vote_window: int = setting(5, "majority-vote window over consecutive rows (N-BaIoT's window variant)", check=(lambda v: is_int(v) and v >= 1 and v % 2 == 1, 'an odd integer >= 1'))
    personalise_epochs: int = setting(0, "each client fine-tunes the evaluated model on its own rows for this many epochs and is also scored with it (mode 'personal'; detect --follow uses it); 0 = off", check=(lambda v: is_int(v) and v >= 0, 'an integer >= 0'))
    personalise_lr: float = setting(0.001, 'learning rate of the personalising fine-tune (Adam)', check=(lambda v: is_num(v) and v > 0, 'a number > 0'))
