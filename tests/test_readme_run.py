"""The README's offline main job, run as a new user runs it (config_simulation/fedml_config_synthetic.yaml: 9 clients,
20 rounds, in this process): its targets, and README's sample output is what it prints."""
from __future__ import annotations

from tests.rounds import metrics_of, rounds_of, run


def test_nine_client_synthetic_defaults_meet_targets(tmp_path):
    """The README's offline main job (config_simulation/fedml_config_synthetic.yaml): 9 clients, 20 rounds."""
    from fediot.config import load

    values = load("config_simulation/fedml_config_synthetic.yaml").values
    values["common_args"]["run_dir_root"] = str(tmp_path / "runs")
    said: list[str] = []
    _, _, run_dir = run(values, said=said)
    assert_readme_sample(said)
    m = metrics_of(run_dir)
    assert len(m["devices"]) == 9
    assert m["global"]["tpr"] >= 0.99 and m["global"]["fpr"] <= 0.01  # each device with its own threshold
    assert all(e["fpr"] <= 0.02 and e["tpr"] >= 0.98 for e in m["devices"].values()), m["devices"]
    rounds = rounds_of(run_dir)
    assert len(rounds) == 20 and all(r["data_source"] == "synthetic" for r in rounds)
    assert [r["round"] for r in rounds if "eval" in r] == [5, 10, 15, 20]
    # every client trains every round: the latest global model is evaluated and saved
    assert not any("eval_model_rounds" in r for r in rounds) and m["model"]["average_of_rounds"] == [20, 20]


# README's sample was printed on one CPU; float32 training rounds differently where other SIMD kernels run (a
# clean-clone CI on an AVX-512 machine, 2026-12-07: round 5's loss 0.00719 against 0.00713, the global threshold's FPR
# 0.0474 against 0.0489, every device's own TPR/FPR the same). A sample number matches within this much.
SAMPLE_ABS, SAMPLE_REL = 0.005, 0.05
NUMBER = r"\d+\.\d+"


def sample_line_matches(printed: str, sample: str, prefix: bool = False) -> bool:
    """`printed` says what the README's `sample` line says: the same words, each number within SAMPLE_ABS +
    SAMPLE_REL x its value (a sample ending in "…" is a prefix)."""
    import re

    if prefix:
        sample = sample[:-1]
        printed = printed[:len(sample) + 8]  # room for a number printed with more digits
    words_p, words_s = re.split(NUMBER, printed), re.split(NUMBER, sample)
    if prefix:
        if len(words_p) < len(words_s) or words_p[:len(words_s) - 1] != words_s[:-1] \
                or not words_p[len(words_s) - 1].startswith(words_s[-1]):
            return False
    elif words_p != words_s:
        return False
    return all(abs(float(a) - float(b)) <= SAMPLE_ABS + SAMPLE_REL * abs(float(b))
               for a, b in zip(re.findall(NUMBER, printed), re.findall(NUMBER, sample)))


def assert_readme_sample(said: list[str]) -> None:
    """README's sample output is what this config prints: each line of the block is a line the run said (seconds
    and paths aside, numbers within SAMPLE_ABS + SAMPLE_REL; a line ending in "…" is a prefix; "…" alone stands for
    lines left out). The launcher's own lines (its first, its last two) are checked by the MPI test."""
    import re

    from tests.helpers import REPO

    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- sample: config_simulation/fedml_config_synthetic.yaml -->\n```\n", 1)[1].split("```", 1)[0]
    lines = block.strip().splitlines()
    assert lines[0].startswith("FedIoT simulation: 9 clients, 20 rounds, data synthetic; run directory ")
    assert lines[-2].startswith("outputs: metrics.json, rounds.jsonl, model.pt")

    def plain(line: str) -> str:
        return re.sub(r"\(\d+\.\ds\)", "(s)", re.sub(r"/\S*/runs/\S*", "RUN", line))

    ours = [plain(line) for line in said]
    for line in lines[1:-2]:
        if line == "…":
            continue
        want = plain(line)
        found = any(sample_line_matches(o, want, prefix=want.endswith("…")) for o in ours)
        assert found, f"README sample line not printed by the run: {line}"


def test_sample_lines_match_by_words_and_close_numbers():
    """The README check itself: another CPU's rounding passes, another word or a number off by more does not."""
    sample = "round 5/20  clients 9  mean loss 0.00713  (s)"
    assert sample_line_matches("round 5/20  clients 9  mean loss 0.00719  (s)", sample)
    assert not sample_line_matches("round 5/20  clients 9  mean loss 0.01500  (s)", sample)
    assert not sample_line_matches("round 5/20  clients 8  mean loss 0.00713  (s)", sample)
    rates = "evaluation after round 20: 9 device(s)  TPR 1.0000  FPR 0.0000  F1 1.0000  (global threshold: TPR 1.0000 FPR 0.0489)"
    assert sample_line_matches(rates.replace("0.0489", "0.0474"), rates)
    assert not sample_line_matches(rates.replace("FPR 0.0000", "FPR 0.0200", 1), rates)
    assert sample_line_matches("clients: 9: Danmini_Doorbell (1800 training rows), Ecobee_Thermostat (1800 training",
                               "clients: 9: Danmini_Doorbell (1800 training rows), …", prefix=True)
