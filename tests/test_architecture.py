"""The import graph obeys doc/architecture.md's layer table (lower layers never import upper ones)."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from tests.helpers import REPO, parse_source

PACKAGES = ("fediot", "monitor", "data", "model", "traffic", "evaluation", "federation", "attacks", "trainer", "deployment",
            "bench", "tools")
COMMANDS = {"main_fedml_iot", "baselines", "score", "compare", "detect", "capture", "triage", "relay", "traffic.train_device",
            "traffic.compare_ranges"}
ORCHESTRATION = ("federation", "trainer", "deployment", "main_fedml_iot")


def layer_table() -> dict[str, set[str]]:
    """group -> groups it may import, parsed from doc/architecture.md ("everything": every group)."""
    rules: dict[str, set[str]] = {}
    rows = []
    text = (REPO / "doc" / "architecture.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`[\w.]+`", cells[0]):
            rows.append(cells)
    for cells in rows:
        may = cells[2].split("(only")[0]  # "(only data.sources, ...)" narrows a rule; checked below
        rules[cells[0].strip("`")] = ({c[0].strip("`") for c in rows} if may.strip() == "everything"
                                      else set(re.findall(r"`([\w.]+)`", may)))
    return rules


def project_modules() -> dict[str, Path]:
    mods = {p.stem: p for p in REPO.glob("*.py")}
    for pkg in PACKAGES:
        for p in (REPO / pkg).rglob("*.py"):
            name = ".".join(p.relative_to(REPO).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = p
    return mods


def imports_of(path: Path, modules: set[str] = frozenset()) -> set[str]:
    """Every module a file imports, at module level or inside functions (`from data import nbaiot`
    counts as data.nbaiot when that is a module)."""
    out: set[str] = set()
    for node in ast.walk(parse_source(path)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in modules else node.module)
    return out


def group_of(module: str) -> str | None:
    if module in COMMANDS:
        return "commands"
    if module.endswith(".settings") and module.split(".")[0] in PACKAGES and module != "fediot.settings":
        return "settings"  # a package's config section: declarations the config composes, below every package
    if module in ("data.nbaiot", "data.csvfile"):  # ground-floor modules of data, below traffic
        return module
    top = module.split(".")[0]
    return top if top in PACKAGES else None


def test_doc_table_covers_every_package():
    assert set(layer_table()) == {*PACKAGES, "data.nbaiot", "data.csvfile", "settings", "commands"}


def test_settings_modules_are_declarations():
    """A package's `settings` module imports nothing of FedIoT but `fediot.settings` (the config imports them all,
    so a settings module importing its package's code would load every component into every process)."""
    mods = project_modules()
    found = sorted(name for name in mods if group_of(name) == "settings")
    assert {"traffic.settings", "federation.settings", "attacks.settings", "data.settings"} <= set(found)
    bad = {name: sorted(i for i in imports_of(mods[name], set(mods)) if group_of(i) is not None
                        and i != "fediot.settings") for name in found}
    assert not {k: v for k, v in bad.items() if v}, bad
    # and the package holding it imports nothing on import that the config would then load
    for name in found:
        init = REPO / name.split(".")[0] / "__init__.py"
        assert not {i for i in imports_of(init, set(mods)) if group_of(i) is not None}, init


def test_no_import_breaks_the_layers():
    rules = layer_table()
    mods = project_modules()
    bad = []
    for name, path in sorted(mods.items()):
        group = group_of(name)
        if group is None:
            continue
        allowed = rules[group] | {group}
        for imported in imports_of(path, set(mods)):
            target = group_of(imported)
            if target is None or target == group:
                continue
            if target in ("data.nbaiot", "data.csvfile") and "data" in allowed:
                continue
            if target == "settings" and name != "fediot.config":  # for everyone else, a settings module is its package
                target = imported.split(".")[0]
                if target == group:
                    continue
            if target not in allowed:
                bad.append(f"{name} ({group}) imports {imported} ({target})")
    assert not bad, "imports the layer table does not allow:\n" + "\n".join(bad)


def test_traffic_only_through_the_data_registry():
    mods = project_modules()
    offenders = []
    for name, path in mods.items():
        targets = {i for i in imports_of(path, set(mods)) if group_of(i) == "traffic"}
        if not targets:
            continue
        if name.startswith("data.") and name != "data.sources":
            offenders.append(name)
        if name.startswith(ORCHESTRATION):
            offenders.append(name)
    assert not offenders, f"reach traffic/ outside data.sources: {offenders}"


def test_the_checker_catches_an_upward_import(tmp_path):
    """The test above would fail on a model module importing the round state."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from federation.state import RoundState\n")
    imported = imports_of(bad)
    assert "federation.state" in imported and group_of("federation.state") not in layer_table()["model"]


def test_bench_and_tools_are_checked_and_nothing_imports_them():
    mods = project_modules()
    assert "bench.flower_app" in mods and "tools.check_board_install" in mods
    rules = layer_table()
    assert all(g not in rules[other] for g in ("bench", "tools") for other in rules if other not in ("bench", "tools",
                                                                                                     "commands"))
    users = [name for name, path in mods.items() if group_of(name) not in ("bench", "tools")
             and any(group_of(i) in ("bench", "tools") for i in imports_of(path, set(mods)))]
    assert not users, users


def test_attacks_only_where_the_table_says():
    """The attacks package (issue 35: attack code lived in the honest client) is loaded only by the simulation, a
    deployment launched with attack_args.red_team, bench, tools and tests."""
    mods = project_modules()
    users = sorted(name for name, path in mods.items() if group_of(name) not in ("attacks", "bench", "tools")
                   and any(group_of(i) == "attacks" for i in imports_of(path, set(mods))))
    assert users == ["deployment.launch", "trainer.simulation"], users


def test_the_honest_client_knows_no_attack():
    """No attack name, no attack_scale and no bomb in the honest client, the client node or the in-process grid: they
    call hooks whose honest versions say what the client has."""
    from attacks.settings import ATTACKS

    for module in ("federation/client.py", "trainer/nodes.py", "federation/inprocess.py"):
        text = (REPO / module).read_text()
        named = [a for a in ATTACKS[1:] if f'"{a}"' in text] + [w for w in ("attack_scale", "bomb", "self.attack")
                                                                   if w in text]
        assert not named, f"{module}: {named}"


def test_the_config_is_read_by_attribute():
    """fediot/config.py says the code reads attributes and never looks keys up by string; it did in four modules."""
    mods = project_modules()
    lookups = sorted(name for name, path in mods.items() if name != "fediot.config" and "DEFAULTS[" in path.read_text())
    assert not lookups, lookups


def test_every_grid_receives_through_one_receiver():
    """Issue 35: decode -> validate -> type -> refuse-and-count was written in each grid; now every grid's receiving
    side is a `federation.messages.Receiver` (the transports only decode bytes into messages for a node, which
    validates through its Receiver)."""
    grids = ["trainer/nodes.py", "federation/inprocess.py", "bench/flower_app.py"]
    by_hand = {"validate", "typed", "decode_message"}  # federation.messages' functions a Receiver calls
    for path in grids:
        tree = parse_source(REPO / path)
        calls = [n.func for n in ast.walk(tree) if isinstance(n, ast.Call)]
        direct = [f.id for f in calls if isinstance(f, ast.Name) and f.id in by_hand]
        direct += [f.attr for f in calls if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                   and f.value.id == "messages" and f.attr in by_hand]
        assert any(isinstance(f, (ast.Name, ast.Attribute)) and "Receiver" in (getattr(f, "id", "") or
                                                                                getattr(f, "attr", "")) for f in calls), path
        assert not direct, (path, direct)


COMM_ONLY_PROBE = """
import sys
from trainer.fedml_glue import fedml_comm_only
assert fedml_comm_only()
import deployment.launch, deployment.grpc_transport, trainer.nodes
from fedml.core.distributed.fedml_comm_manager import FedMLCommManager
heavy = sorted(m for m in ("torchvision", "torch._dynamo", "fedml.computing", "fedml.core.alg_frame", "wandb")
               if m in sys.modules)
print(hasattr(sys.modules["fedml"], "init"), heavy, FedMLCommManager.__module__)
"""


def test_a_deployment_node_imports_fedmls_comm_classes_without_its_package_initialisers():
    """Issue 36 (a board's memory) and CI time: the server's and the boards' processes take FedML's comm manager and
    message classes without `fedml/__init__` (collect_env, MLOps, torchvision, torch._dynamo); a process where FedML
    is already imported keeps the full package."""
    import subprocess
    import sys

    from tests.helpers import REPO

    proc = subprocess.run([sys.executable, "-c", COMM_ONLY_PROBE], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "[]", "fedml.core.distributed.fedml_comm_manager"], proc.stdout



def test_fedml_comm_only_leaves_an_imported_fedml_alone(monkeypatch):
    import types

    from trainer.fedml_glue import fedml_comm_only

    full = types.ModuleType("fedml")  # stands for the real package, imported before
    monkeypatch.setitem(sys.modules, "fedml", full)
    assert fedml_comm_only() is False and sys.modules["fedml"] is full
