from fediot.config import DEFAULTS
from tests.helpers import REPO


def test_readme_documents_every_config_key():
    readme = (REPO / "README.md").read_text()
    missing = [f"{s}.{k}" for s, keys in DEFAULTS.items() for k in keys if f"`{s}.{k}`" not in readme]
    assert not missing, f"README.md lacks config keys: {missing}"


def test_ci_runs_the_readme_test_command():
    assert "bash run_tests.sh" in (REPO / "README.md").read_text()
    assert "bash run_tests.sh" in (REPO / ".ci" / "run").read_text()


def test_readme_config_table_is_the_generated_one():
    from fediot.config import markdown_table

    assert markdown_table() in (REPO / "README.md").read_text(), "regenerate with: python -m fediot.config"


def test_architecture_doc_names_real_modules():
    """Every `package.module` the architecture page cites exists."""
    import re

    text = (REPO / "doc" / "architecture.md").read_text()
    cited = set(re.findall(r"`((?:fediot|data|model|traffic|evaluation|federation|trainer|deployment)\.[a-z_]+)", text))
    files = {"model.pt", "model.npz", "metrics.json", "report.md", "rounds.jsonl", "curves.json"}  # run-directory files
    missing = [c for c in sorted(cited - files) if not (REPO / (c.replace(".", "/") + ".py")).is_file()]
    assert not missing, missing
