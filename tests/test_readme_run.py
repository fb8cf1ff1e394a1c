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


def assert_readme_sample(said: list[str]) -> None:
    """README's sample output is what this config prints: each line of the block is a line the run said (seconds
    and paths aside; a line ending in "…" is a prefix; "…" alone stands for lines left out). The launcher's own
    lines (its first, its last two) are checked by the MPI test."""
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
        found = any(o.startswith(want[:-1]) for o in ours) if want.endswith("…") else want in ours
        assert found, f"README sample line not printed by the run: {line}"
