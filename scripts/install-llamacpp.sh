#!/usr/bin/env bash
# Installs llama.cpp as gemma-fit's peer engine: llama-cpp-python (default 0.3.36, which vendors
# ggml-org/llama.cpp@0c1e57098, the version the llama.cpp profile follows), compiled from PyPI's
# sdist into a virtual environment outside the clone, once:
#
#   scripts/install-llamacpp.sh          # prints the environment's python
#
# Where: $GEMMA_FIT_HOME/peer/llamacpp-venv (GEMMA_FIT_HOME defaults to ~/.cache/gemma-fit).
# Cold: ~15 minutes on 2 cores (it compiles llama.cpp); warm: under a second (already there).
# LLAMA_CPP_PYTHON_VERSION picks another release (the profile is checked against 0.3.36 only).
set -euo pipefail

HOME_DIR=${GEMMA_FIT_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/gemma-fit}
VENV=$HOME_DIR/peer/llamacpp-venv
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}

have() { "$VENV/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$VERSION')" 2>/dev/null; }
if ! have; then
  echo "installing llama-cpp-python==$VERSION into $VENV (compiles llama.cpp: ~15 min on 2 cores)" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # (An interrupted install leaves no importable llama_cpp: the next call starts over.)
  "$VENV/bin/pip" install --quiet --no-cache-dir "llama-cpp-python==$VERSION" >&2
  have || { echo "llama-cpp-python $VERSION did not import after installing" >&2; exit 1; }
fi
echo "$VENV/bin/python"
