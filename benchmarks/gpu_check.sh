#!/usr/bin/env bash
# The GPU check of the training engine, in under 8 minutes, on a machine with a CUDA GPU and
# this package installed (README quick start); from the repository root:
#
#     bash benchmarks/gpu_check.sh | tee gpu_check.txt
#
# Prints the GPU and versions, then benchmarks/engine.py on cuda: the official-style loop,
# the per-run engine and the stacked engine on the digits MLP and SCE's MNIST and CIFAR-10
# CNNs (4 runs as one stack, which `train.stack: auto` does on CUDA), each in float32 and in
# bf16 autocast (train.precision), the digits MLP with 48 runs in stacks of at most 6, at
# most 24 and all 48 (train.stack), with images per second,
# ratios and the share of the float32 matmul peak; then the same engine rows under
# torch.compile with CUDA graphs (train.compile: reduce-overhead) on the MNIST CNN and 48
# stacked digits runs. Measured numbers go to README.md ("GPU"); none is there until this
# has run on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1  # what a call printed before its timeout reaches the output
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))"
# a call cut by its timeout has printed the networks it finished; the next still runs
timeout 300 python benchmarks/engine.py --device cuda --rounds 2 --precisions fp32,bf16 --stack-sizes 6,24,auto --mlp-runs 48 \
    || echo "engine.py stopped with status $?"
timeout 150 python benchmarks/engine.py --device cuda --rounds 2 --networks digits_mlp,sce_mnist_cnn --stack-sizes auto \
    --mlp-runs 48 --compile reduce-overhead || echo "engine.py --compile stopped with status $?"
