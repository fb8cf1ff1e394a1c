from fediot.config import DEFAULTS
from tests.helpers import REPO, parse_source


def test_config_page_documents_every_config_key():
    page = (REPO / "doc" / "config.md").read_text()
    missing = [f"{s}.{k}" for s, keys in DEFAULTS.items() for k in keys if f"`{s}.{k}`" not in page]
    assert not missing, f"doc/config.md lacks config keys: {missing}"


def test_config_help_texts_are_one_line():
    """Issue 35: a key's help is one line of at most 250 characters; measurements and reasons live in doc/config.md
    ("Why these defaults") and doc/benchmarks.md."""
    long = {f"{s}.{k}": len(v[1]) for s, keys in DEFAULTS.items() for k, v in keys.items()
            if len(v[1]) > 250 or "\n" in v[1]}
    assert not long, long


def test_ci_runs_the_readme_test_command():
    assert "bash run_tests.sh" in (REPO / "README.md").read_text()
    assert "bash run_tests.sh" in (REPO / ".ci" / "run").read_text()


def test_config_page_table_is_the_generated_one():
    from fediot.config import markdown_table

    assert markdown_table() in (REPO / "doc" / "config.md").read_text(), "regenerate with: python -m fediot.config"


def test_readme_is_a_users_page():
    """Issue 36: README is a user's page of at most 250 lines whose first screen offers both paths (a household's,
    a researcher's); its links to doc/ pages and their sections resolve."""
    import re

    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    first_screen = "\n".join(readme.splitlines()[:20])
    assert "[A household]" in first_screen and "[A researcher]" in first_screen
    for page, anchor in re.findall(r"\]\((doc/[\w.-]+\.md)(?:#([\w-]+))?\)", readme):
        text = (REPO / page).read_text()
        if anchor:
            slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                     for h in re.findall(r"(?m)^#+ (.+)$", text)}
            assert anchor in slugs, f"README links {page}#{anchor}: no such section"


def test_architecture_doc_names_real_modules():
    """Every `package.module` the architecture page cites exists."""
    import re

    text = (REPO / "doc" / "architecture.md").read_text()
    cited = set(re.findall(r"`((?:fediot|data|model|traffic|evaluation|federation|trainer|deployment)\.[a-z_]+)", text))
    files = {"model.pt", "model.npz", "metrics.json", "report.md", "rounds.jsonl", "curves.json"}  # run-directory files
    missing = [c for c in sorted(cited - files) if not (REPO / (c.replace(".", "/") + ".py")).is_file()]
    assert not missing, missing


KEY_PATTERN = r"\b([a-z]+_args\.[a-z_0-9]+)"


def unknown_keys(text: str) -> list[str]:
    """The `section.key` names in a text that are not config keys."""
    import re

    keys = {f"{s}.{k}" for s, section in DEFAULTS.items() for k in section}
    return sorted({m for m in re.findall(KEY_PATTERN, text) if m not in keys})


def doc_pages() -> list:
    return [REPO / "README.md", *sorted((REPO / "doc").glob("*.md"))]


def test_every_config_key_named_in_the_docs_exists():
    """A `section.key` in README.md or doc/*.md that is not a config key (renamed, retired, misspelt) fails here."""
    unknown = [f"{page.name}: {key}" for page in doc_pages() for key in unknown_keys(page.read_text())]
    assert not unknown, "not config keys:\n" + "\n".join(unknown)


def test_the_docs_key_check_catches_a_retired_key():
    assert unknown_keys("with `train_args.threshold_outlier_ratio` a device ... and `train_args.robust`") == \
        ["train_args.threshold_outlier_ratio"]


def test_functions() -> dict[str, set[str]]:
    """tests/test_x.py -> the functions defined in it."""
    import ast

    return {f"tests/{f.name}": {n.name for n in ast.walk(parse_source(f)) if isinstance(n, ast.FunctionDef)}
            for f in (REPO / "tests").glob("test_*.py")}


def test_every_test_the_docs_cite_exists():
    """README said `tests/test_rounds.py` checks the synthetic run's printed lines (tests/test_readme_run.py did):
    every tests/test_x.py, tests/test_x.py::test_name and `test_x` (a test module or a test) cited in README.md or
    doc/*.md exists."""
    import re

    defined = test_functions()
    every_test = set().union(*defined.values())
    missing = []
    for page in doc_pages():
        text = page.read_text()
        for module, test in set(re.findall(r"(tests/test_[a-z0-9_]+\.py)(?:::([a-z0-9_]+))?", text)):
            if module not in defined or (test and test not in defined[module]):
                missing.append(f"{page.name}: {module}{'::' + test if test else ''}")
        for name in set(re.findall(r"`(test_[a-z0-9_]+)`", text)):
            if f"tests/{name}.py" not in defined and name not in every_test:
                missing.append(f"{page.name}: `{name}`")
    assert not missing, "cited but not there:\n" + "\n".join(sorted(missing))


def test_every_module_attribute_the_docs_cite_exists():
    """README named `evaluation.counts.report_problems` for what lives in `federation.defenses`: every
    `package.module.name` cited in README.md or doc/*.md is a module of ours with that name in it."""
    import ast
    import re

    packages = "fediot|data|model|traffic|evaluation|federation|trainer|deployment|monitor|detect"
    missing = []
    for page in doc_pages():
        for pkg, module, name in set(re.findall(rf"`({packages})\.([a-z_0-9]+)\.([A-Za-z_][A-Za-z_0-9]*)", page.read_text())):
            path = REPO / pkg / f"{module}.py"
            if not path.is_file():
                missing.append(f"{page.name}: {pkg}.{module} (no {path.relative_to(REPO)})")
                continue
            tree = parse_source(path)
            names = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            names |= {t.id for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))
                      for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
            if name not in names:
                missing.append(f"{page.name}: {pkg}.{module}.{name}")
    assert not missing, "cited but not there:\n" + "\n".join(missing)


def test_architecture_protocol_table_is_the_generated_one():
    """Issue 35: the protocol table is made from the message definitions, so the page cannot drift from the code."""
    from federation.messages import protocol_table

    assert protocol_table() in (REPO / "doc" / "architecture.md").read_text(), \
        'regenerate with: python -c "import federation.messages as m; print(m.protocol_table())"'
