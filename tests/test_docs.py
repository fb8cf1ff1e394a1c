from fediot.config import DEFAULTS
from tests.helpers import REPO


def test_readme_documents_every_config_key():
    readme = (REPO / "README.md").read_text()
    missing = [f"{s}.{k}" for s, keys in DEFAULTS.items() for k in keys if f"`{s}.{k}`" not in readme]
    assert not missing, f"README.md lacks config keys: {missing}"


def test_ci_runs_the_readme_test_command():
    assert "bash run_tests.sh" in (REPO / "README.md").read_text()
    assert "bash run_tests.sh" in (REPO / ".ci" / "run").read_text()
