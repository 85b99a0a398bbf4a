#!/usr/bin/env bash
# Prepare, on this machine, what a lent GPU machine (the `device` tool) needs to check pyro-vae's
# CUDA path: that machine has Python 3.12 with torch but no package index and none of pyro-ppl,
# arviz or pydantic. Writes two git-ignored folders that the tool carries:
#
#   .whl/      wheels of the packages its image lacks (CPython 3.12, x86-64 Linux)
#   .devdata/  mnist/mnist.pkl.gz (the data cache's source, 17 MB) and, if a trained run folder
#              is given, run/ (its config, run.json, metrics and checkpoint) for the trained-model
#              IWAE benchmark
#
#   bash benchmarks/device/prepare.sh [RUN_DIR]      # e.g. the README's main job
#
# then on the device (carry: [".whl", ".devdata"]): bash benchmarks/device/check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl .devdata
mkdir -p .whl .devdata/mnist
# versions pinned to those this project is tested with here; one version of each
wheels=(pyro-ppl==1.9.2 pyro-api==0.1.2 arviz==0.23.4 xarray-einstats==0.9.1 h5netcdf==1.8.2 platformdirs==4.14.5
        pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 typing-extensions==4.15.0)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${wheels[@]}"
data_root="${PYRO_VAE_DATA:-$HOME/.cache/pyro_vae}"
if [ ! -f "$data_root/mnist/mnist.pkl.gz" ]; then
    python3 -c "from pyro_vae.cli import main; raise SystemExit(main(['data', 'fetch', 'mnist']))"
fi
cp "$data_root/mnist/mnist.pkl.gz" .devdata/mnist/
if [ $# -ge 1 ]; then
    mkdir -p .devdata/run
    for f in config.yaml run.json metrics.csv checkpoint.pt; do cp "$1/$f" .devdata/run/; done
fi
du -sh .whl .devdata
