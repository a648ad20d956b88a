#!/usr/bin/env bash
# The wheel is what is tested: install ONLY the built wheel (core dependencies, no torch) into a fresh
# venv and run the documented commands on the committed samples, with their documented exit codes.
# Usage: scripts/smoke_wheel.sh dist/torch_statecli-X.Y.Z-py3-none-any.whl [PYTHON]  (PYTHON: python3 by default)
set -euo pipefail
WHEEL=$(realpath "$1")
ROOT=$(realpath "$(dirname "$0")/..")
S="$ROOT/sample_checkpoints"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"  # never the source tree: `python -m statecli` must import the installed package

PYTHON=${2:-python3}
"$PYTHON" -m venv venv
echo "   (the wheel under $("$PYTHON" --version 2>&1))"
venv/bin/python -m pip install -q "$WHEEL" 2>&1 | grep -v "^WARNING: Location" || true
PY="$WORK/venv/bin/python"
SC="$WORK/venv/bin/statecli"
FAILED=0

# expect CODE CMD...: run CMD, compare its exit code; keep its stderr in $WORK/err for later checks
expect() {
    local want=$1; shift
    local got=0
    "$@" >"$WORK/out" 2>"$WORK/err" || got=$?
    if [ "$got" = "$want" ]; then echo "ok   [$got] ${*#"$WORK/venv/bin/"}"
    else echo "FAIL [$got, want $want] $*"; sed 's/^/     /' "$WORK/err" | head -5; FAILED=1; fi
}
check() {  # check DESCRIPTION CMD...: a plain assertion
    local what=$1; shift
    if "$@"; then echo "ok   $what"; else echo "FAIL $what"; FAILED=1; fi
}

VERSION=$(basename "$WHEEL" | cut -d- -f2)
check "core install has no torch" "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"
expect 0 "$SC" --version
check "statecli --version prints $VERSION" grep -qx "statecli $VERSION" "$WORK/out"
expect 0 "$PY" -m statecli --version
check "python -m statecli --version prints $VERSION" grep -qx "statecli $VERSION" "$WORK/out"
expect 0 "$SC" --help
check "the package is the installed one" "$PY" -c "import statecli, sys; sys.exit(not statecli.__file__.startswith('$WORK/venv/'))"
check "py.typed ships" "$PY" -c "import importlib.resources as r, sys; sys.exit(not r.files('statecli').joinpath('py.typed').is_file())"
check "LICENSE ships" "$PY" -c "import importlib.metadata as m, sys; sys.exit(not any(str(f).endswith('LICENSE') for f in m.files('torch-statecli')))"
check "import statecli.cli leaves torch unimported" "$PY" -c "import sys, statecli.cli; sys.exit('torch' in sys.modules)"

# metadata commands, every format
for f in cnn.pt cnn.safetensors legacy.pt dtypes.pt train_ckpt.pt full_model.pt transformer.pt sharded sharded_bin dcp; do
    expect 0 "$SC" inspect "$S/$f"
done
expect 0 "$SC" inspect "$S/cnn.pt" --stats
expect 0 "$SC" inspect "$S/cnn.pt" -f json
expect 0 "$SC" size "$S/train_ckpt.pt"
expect 0 "$SC" show "$S/cnn.pt" fc.weight
expect 2 "$SC" inspect "$WORK/missing.pt"
# diff: 0 equal, 1 different
expect 0 "$SC" diff "$S/cnn.pt" "$S/cnn.safetensors"
expect 0 "$SC" diff "$S/cnn.pt" "$S/legacy.pt"
expect 1 "$SC" diff "$S/cnn.pt" "$S/transformer.pt"
# scan: 0 safe, 1 needs trust, 3 dangerous (a canary archive built here: its pickle calls posix.system)
expect 0 "$SC" scan "$S/cnn.pt"
expect 1 "$SC" scan "$S/full_model.pt"
"$PY" - <<'PY'
import zipfile
with zipfile.ZipFile("evil.pt", "w") as z:
    z.writestr("evil/data.pkl", b"\x80\x02cposix\nsystem\nq\x00X\x0b\x00\x00\x00touch pwnedq\x01\x85q\x02Rq\x03.")
    z.writestr("evil/version", "3\n")
PY
expect 3 "$SC" scan evil.pt
expect 3 "$SC" check evil.pt
check "the canary never ran" test ! -e pwned
# check: 0 passed, 1 a rule failed
expect 0 "$SC" check "$S/cnn.safetensors" "$S/cnn.pt" --no-nan --no-inf --devices cpu
expect 1 "$SC" check "$S/cuda.pt" --devices cpu
expect 1 "$SC" check "$S/full_model.pt"
expect 1 "$SC" check "$S/cuda.pt" --devices cpu -f md
check "check -f md marks the failure" grep -q "❌" "$WORK/out"
# rewrites without torch
expect 0 "$SC" cast "$S/cnn.pt" --dtype half -o cnn16.safetensors
expect 0 "$SC" inspect cnn16.safetensors
expect 0 "$SC" convert "$S/cnn.pt" -o cnn.safetensors
expect 0 "$SC" diff "$S/cnn.pt" cnn.safetensors
expect 0 "$SC" strip "$S/train_ckpt.pt" --optimizer -o stripped.pt
# a command that needs torch: exit 2, one line naming the extra
expect 2 "$SC" inspect "$S/cnn.pt" --model "$S/models.py:SmallCNN"
check "the torch-only command names the extra in one line" \
    test "$(wc -l <"$WORK/err")" = 1 -a -n "$(grep -F "pip install 'torch-statecli[torch]'" "$WORK/err")"
expect 2 "$SC" browse "$S/cnn.pt"
check "browse names the tui extra" grep -qF "pip install 'torch-statecli[tui]'" "$WORK/err"

# pipx: only where the machine has it (installing pipx itself from PyPI costs CI about 100 s of network)
if command -v pipx >/dev/null 2>&1; then
    expect 0 env PIPX_HOME="$WORK/pipx" PIPX_BIN_DIR="$WORK/pipx-bin" pipx install "$WHEEL"
    expect 0 "$WORK/pipx-bin/statecli" scan "$S/cnn.pt"
else
    echo "skip pipx install: pipx is not on this machine"
fi

if [ "$FAILED" != 0 ]; then echo "wheel smoke test FAILED"; exit 1; fi
echo "wheel smoke test passed"
