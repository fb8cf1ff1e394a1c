"""build_mlops_pkg.sh builds FedML MLOps packages offline with our code and config, and nothing else."""
import subprocess
import sys
import zipfile

from tests.helpers import REPO


def test_packages_hold_code_and_config_only(tmp_path):
    import os
    proc = subprocess.run(["bash", str(REPO / "build_mlops_pkg.sh"), str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    for kind in ("client", "server"):
        with zipfile.ZipFile(tmp_path / "dist-packages" / f"{kind}-package.zip") as zf:
            names = zf.namelist()
        root = f"{kind}-package/fedml/"
        for needed in ("main_fedml_iot.py", "requirements.txt", "config/fedml.yaml", "config/grpc_ipconfig.csv",
                       "data/nbaiot.py", "data/sources.py", "model/detector.py", "evaluation/counts.py",
                       "federation/state.py", "federation/driver.py", "trainer/nodes.py", "deployment/launch.py", "fediot/config.py"):
            assert root + needed in names, needed
        for name in names:
            assert not any(part in name for part in ("runs/", ".venv", "__pycache__", "synthetic_cache", "cache/nbaiot",
                                                     "tests/", ".pt", ".git/")), name
            assert not name.endswith(".csv") or name.endswith("grpc_ipconfig.csv"), name
