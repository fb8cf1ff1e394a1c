"""requirements.txt gives a board the right torch: CPU-only on aarch64, today's pin on x86_64 (offline checks).

The download itself (sizes, no CUDA package) needs PyPI: tools/check_board_install.py, measured in doc/deployment.md.
"""
import subprocess
import sys

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.helpers import REPO, load_tool

check_board_install = load_tool("check_board_install")


def pins_for(machine: str) -> dict[str, Version]:
    """torch / torchvision pins that apply on a Linux machine with this CPU and Python 3.11."""
    env = check_board_install.marker_environment(machine, "3.11")
    pins: dict[str, Version] = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        if req.name in ("torch", "torchvision") and (req.marker is None or req.marker.evaluate(env)):
            assert req.name not in pins, f"two {req.name} pins apply on {machine}"
            (spec_,) = req.specifier
            assert spec_.operator == "==", line
            pins[req.name] = Version(spec_.version)
    return pins


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_one_matching_torch_pair_per_machine(machine):
    pins = pins_for(machine)
    assert set(pins) == {"torch", "torchvision"}
    # torchvision 0.(m+15) belongs to torch 2.m
    assert pins["torchvision"].minor == pins["torch"].minor + 15 and pins["torch"].major == 2


def test_aarch64_gets_a_cpu_only_torch_and_x86_keeps_todays_pin():
    # PyPI's aarch64 torch 2.6-2.10 wheels are CPU builds; 2.11+ require the CUDA 13 packages.
    assert Version("2.6") <= pins_for("aarch64")["torch"] < Version("2.11")
    assert pins_for("x86_64")["torch"] == Version("2.14.1")


def test_keep_torch_filter_of_install_sh_drops_only_the_torch_pins():
    """FEDIOT_KEEP_TORCH=1 bash install.sh (Jetson's own torch) installs requirements.txt minus these lines."""
    script = (REPO / "install.sh").read_text()
    pattern = script.split("grep -Ev '")[1].split("'")[0]
    kept = subprocess.run(["grep", "-Ev", pattern, str(REPO / "requirements.txt")], capture_output=True, text=True).stdout
    original = (REPO / "requirements.txt").read_text().splitlines()
    dropped = [ln for ln in original if ln not in kept.splitlines()]
    assert len(dropped) == 4 and all(ln.startswith(("torch==", "torchvision==")) for ln in dropped)
    assert "fedml==0.9.6" in kept and "numba" in kept


def test_check_tool_names_a_missing_requirements_file(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "check_board_install.py"), "--requirements",
                           str(tmp_path / "nope.txt")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "nope.txt" in proc.stderr


def test_detect_requirements_list_the_detect_path_imports():
    """requirements-detect.txt: the packages whose modules the detect path loads (checked by
    tests/test_lean_detector.py running detect with torch/FedML blocked), paho-mqtt for MQTT alerts (imported only
    when detect_args.mqtt_broker is set; tests/test_watch.py), prometheus_client for /metrics (imported only with
    --metrics-port; tests/test_watch.py), and no torch/FedML."""
    names = {Requirement(ln.split("#")[0]).name.lower() for ln in (REPO / "requirements-detect.txt").read_text().splitlines()
             if ln.split("#")[0].strip()}
    assert names == {"numpy", "numba", "dpkt", "pyyaml", "paho-mqtt", "prometheus-client"}
