#!/usr/bin/env bash
# On a lent GPU machine (the `device` tool), after benchmarks/device/prepare.sh ran here:
#
#   run(command="bash benchmarks/device/check.sh", carry=[".whl", ".devdata"], timeout_s=600)
#
# installs the carried wheels where the image lacks them, runs the device tests (CUDA cases
# included) and the benchmark suite on CUDA, and writes the logs to $OUT (gpu.txt, tests.log,
# suite.log). Set CHECK=tests or CHECK=suite to run only one part. (NCCL is not checked: a one-rank
# torchrun job runs as a single process, and NCCL refuses two ranks on one GPU.)
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-/tmp/pyro_vae_device_check}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ! python3 -c "import pyro, pydantic, arviz" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # pyro_vae from this tree, not installed
[ -d .devdata/mnist ] && export PYRO_VAE_DATA="$PWD/.devdata"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt"
python3 -c "import torch, pyro; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'pyro', pyro.__version__)" | tee -a "$out/gpu.txt"
status=0
if [ "${CHECK:-all}" = all ] || [ "${CHECK:-all}" = tests ]; then
    python3 -m pytest tests/test_devices.py tests/test_benchmarks.py tests/test_synchronisation.py tests/training/test_cuda_graphs.py -rs -p no:cacheprovider 2>&1 | tee "$out/tests.log"
    status=${PIPESTATUS[0]}
fi
if [ "${CHECK:-all}" = all ] || [ "${CHECK:-all}" = suite ]; then
    run_args=()
    [ -f .devdata/run/checkpoint.pt ] && run_args=(--run .devdata/run)
    python3 benchmarks/run_all.py --device cuda ${run_args[@]+"${run_args[@]}"} 2>&1 | tee "$out/suite.log"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
exit $status
