#!/usr/bin/env bash
# Builds gemma-fit with `--features cuda` on a machine without a GPU or a CUDA install: the CUDA
# 13.0 compiler, headers and libraries come from PyPI wheels, and a link-time stub stands in for
# the driver's libcuda (never shipped: the GPU machine's driver provides the real one).
# Recipe, pitfalls and what the binary needs at run time: docs/cuda-build.md.
#
# Usage: scripts/build-cuda.sh [--clippy] [WORKDIR]
#   WORKDIR   the toolchain (~1.2 GB of wheels) and the cargo target folder, outside the clone so
#             they outlive it (default /tmp/gemma-fit-cuda)
#   --clippy  check instead of build: `cargo clippy --features cuda --all-targets -D warnings`
#             (what .ci/run does, so the CUDA code keeps compiling)
#   CUDA_COMPUTE_CAP=90 (default; H100/H200 — the kernels are built for sm_90a only)
# Output of a build: WORKDIR/target/release/gemma-fit, and a stripped copy WORKDIR/gemma-fit. At
# run time the GPU machine needs libcudart.so.13, libcublas.so.13, libcublasLt.so.13 and
# libcurand.so.10 on LD_LIBRARY_PATH (e.g. from a PyTorch CUDA 13 venv:
# site-packages/nvidia/cu13/lib) and a driver that supports CUDA 13 (580 or newer).
set -euo pipefail
cd "$(dirname "$0")/.."
clippy=false
if [ "${1:-}" = --clippy ]; then clippy=true; shift; fi
work=${1:-/tmp/gemma-fit-cuda}
venv=$work/venv
root=$work/root
mkdir -p "$work"
if [ ! -x "$root/bin/nvcc" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 \
    nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
  cu=$(ls -d "$venv"/lib/python3.*/site-packages/nvidia/cu13)
  mkdir -p "$root/lib/stubs"
  ln -sfn "$cu/bin" "$root/bin"
  ln -sfn "$cu/include" "$root/include"
  ln -sfn "$cu/nvvm" "$root/nvvm"
  ln -sfn lib "$root/lib64"
  for f in "$cu"/lib/*; do ln -sf "$f" "$root/lib/"; done
  for l in cudart nvrtc curand cublas cublasLt; do
    ln -sf "$(cd "$root/lib" && ls "lib$l.so."* | grep -v alt | head -1)" "$root/lib/lib$l.so"
  done
fi
"$root/bin/nvcc" --version | tail -1
# The driver stub: every cu* entry point cudarc declares, as an empty function (link time only).
cargo fetch --locked --quiet
sys=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10/src/driver/sys/mod.rs | head -1)
grep -ohE 'fn cu[A-Za-z0-9_]+\(' "$sys" | sed 's/fn //;s/(//' | sort -u \
  | awk '{print "void " $1 "(void) {}"}' > "$work/libcuda_stub.c"
gcc -shared -fPIC -nostdlib -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$work/libcuda_stub.c"

export CUDA_HOME=$root CUDA_PATH=$root NVCC=$root/bin/nvcc PATH=$root/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=$work/target
if $clippy; then
  cargo clippy --locked --features cuda --all-targets -- -D warnings
  exit
fi
cargo build --release --locked --features cuda
strip -o "$work/gemma-fit" "$CARGO_TARGET_DIR/release/gemma-fit"
ls -l "$work/gemma-fit"
