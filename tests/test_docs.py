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


def test_every_config_key_named_in_the_docs_exists():
    """A `section.key` in README.md or doc/*.md that is not a config key (renamed, retired, misspelt) fails here."""
    import re

    keys = {f"{s}.{k}" for s, section in DEFAULTS.items() for k in section}
    pages = [REPO / "README.md", *sorted((REPO / "doc").glob("*.md"))]
    named = {(page.name, m) for page in pages for m in re.findall(r"\b([a-z]+_args\.[a-z_0-9]+)", page.read_text())}
    unknown = sorted(f"{page}: {key}" for page, key in named if key not in keys)
    assert not unknown, "not config keys:\n" + "\n".join(unknown)


def test_the_docs_key_check_catches_a_retired_key(tmp_path):
    import re

    keys = {f"{s}.{k}" for s, section in DEFAULTS.items() for k in section}
    text = "with `train_args.threshold_outlier_ratio` a device ... and `train_args.robust`"
    assert [m for m in re.findall(r"\b([a-z]+_args\.[a-z_0-9]+)", text) if m not in keys] == \
        ["train_args.threshold_outlier_ratio"]
