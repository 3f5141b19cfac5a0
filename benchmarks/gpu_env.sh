# Sourced by the scripts that run on a lent GPU machine (gpu_session.sh, variants.sh): from the repo's root, $OUT
# made, the compilers and the wheels of missing packages (.whl/) set up, the GPU named.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1 CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} QWEN3NEXT_CUDA_ARCHS=${QWEN3NEXT_CUDA_ARCHS:-90a}
# The lent H100's default CXX (/opt/gcc/bin/g++) builds extensions that segfault as soon as a
# TORCH_CHECK message formats a number (torch's own load_inline ones too); the system g++ does not.
if [ -x /usr/bin/g++ ]; then export CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++; fi
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl ||
    exit 1
  export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv  # stdout: $OUT returns 8 files at most
