#!/usr/bin/env bash
# Create .venv (Python 3.10 or 3.11) and install FedIoT's requirements into it. Safe to re-run.
#   bash install.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE"
PY="${PYTHON_FOR_VENV:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.10 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
ver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
case "$ver" in
  3.10|3.11) ;;
  *) echo "error: FedIoT needs Python 3.10 or 3.11 (fedml 0.9.6 / wandb 0.13.2 fail on 3.12+); found $PY = $ver. Set PYTHON_FOR_VENV=/path/to/python3.11" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $PY ($ver)"
  "$PY" -m venv .venv
fi
stamp=".venv/.requirements.sha256"
want="$(sha256sum requirements.txt | cut -d' ' -f1)${FEDIOT_KEEP_TORCH:+-keep-torch}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if [ -n "${FEDIOT_KEEP_TORCH:-}" ]; then
    # Jetson: keep the torch/torchvision already in .venv (NVIDIA's JetPack wheels) instead of the pins.
    if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
      echo "error: FEDIOT_KEEP_TORCH is set but .venv has no importable torch + torchvision; install NVIDIA's wheels into .venv first" >&2
      exit 2
    fi
    echo "keeping .venv's torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'); installing the rest of requirements.txt"
    grep -Ev '^(torch|torchvision)[=<> ;]' requirements.txt > .venv/.requirements-without-torch.txt
    .venv/bin/pip install --disable-pip-version-check -q -r .venv/.requirements-without-torch.txt
  else
    echo "installing requirements.txt into .venv (first time: x86_64 several GB, mostly PyTorch; aarch64 about 1 GB, CPU-only torch)"
    # pip compiles each module as it installs it, on one core; installing without and compiling after on every core is
    # faster (measured on 2 cores, 2026-12-07: 176 s against 101 s + 35 s). The compiling must happen: with
    # PYTHONDONTWRITEBYTECODE=1 (set on this machine and in CI) nothing is cached on import, and every process would
    # compile torch's and FedML's modules again (a clean-clone CI's main pytest run took 11:00 instead of 7:44).
    # uv, where there is one (on PATH, or FEDIOT_UV=/path/to/uv), installs the same packages in parallel: the same 155
    # versions as pip from the same indexes, in 26 s against pip's 77 s (2 cores, nothing cached, 2026-12-08).
    UV="${FEDIOT_UV:-$(command -v uv || true)}"
    if [ -n "$UV" ]; then
      # uv reads neither pip.conf nor PIP_* variables: hand it pip's indexes, find-links and constraints, and pip's
      # choice among indexes (the best version on any of them)
      mapfile -t UV_ARGS < <(.venv/bin/python - <<'PY'
import ast, subprocess, sys
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
flags = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
         "constraint": "--constraint"}
seen = set()
for line in out.splitlines():
    key, _, value = line.partition("=")
    flag = flags.get(key.rsplit(".", 1)[-1])
    if flag is None or not value:
        continue
    for item in str(ast.literal_eval(value)).split():
        if (flag, item) not in seen:
            seen.add((flag, item))
            print(flag)
            print(item)
PY
)
      "$UV" pip install --python .venv/bin/python -q --index-strategy unsafe-best-match "${UV_ARGS[@]}" \
        -r requirements.txt
    else
      .venv/bin/pip install --disable-pip-version-check -q --no-compile -r requirements.txt
    fi
    echo "compiling the installed modules"
    .venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
  fi
  echo "$want" > "$stamp"
else
  echo ".venv is up to date with requirements.txt"
fi
# the project itself, editable (pyproject.toml): its packages import from any directory, `fediot` in .venv/bin
pstamp=".venv/.project.sha256"
pwant="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)-$HERE"
if [ "$(cat "$pstamp" 2>/dev/null)" != "$pwant" ] || ! .venv/bin/python -c "import fediot.cli" 2>/dev/null; then
  .venv/bin/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
  echo "$pwant" > "$pstamp"
fi
