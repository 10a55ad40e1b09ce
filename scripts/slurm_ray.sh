#!/usr/bin/env bash
# Run the pipeline as a DVC experiment on a SLURM allocation, its runs as tasks of a Ray
# cluster made of the allocated nodes (README: Scaling out). NOT RUN by the authors of this
# repository: no SLURM cluster was available; the Ray part is what tests/test_scaleout.py
# runs on one machine.
#
#   sbatch scripts/slurm_ray.sh                     # dvc exp run, every stage that is out of date
#   sbatch scripts/slurm_ray.sh -S loss.alpha=0.1   # any `dvc exp run` arguments
#
# Before: a clone of this repository and its virtual environment (pip install -e '.[cluster]')
# on a file system every node mounts, since Ray's workers import the package from it and a
# task retried on another node resumes from the checkpoints in .checkpoints/; the data sets
# in data/downloads/ (the nodes need no network). Adjust the #SBATCH lines to your site.
#SBATCH --job-name=noisylabels
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --gpus-per-task=4
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
. .venv/bin/activate

nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
head_ip=$(srun --nodes=1 --ntasks=1 -w "${nodes[0]}" hostname --ip-address | awk '{print $1}')
port=6379
export RAY_ADDRESS="$head_ip:$port"
gpus=${SLURM_GPUS_PER_TASK:-0}

# one Ray node per SLURM node, kept in the foreground of its srun step (--block)
srun --nodes=1 --ntasks=1 -w "${nodes[0]}" ray start --head --node-ip-address="$head_ip" --port=$port \
    --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="$gpus" --include-dashboard=false --disable-usage-stats --block &
sleep 15
for node in "${nodes[@]:1}"; do
    srun --nodes=1 --ntasks=1 -w "$node" ray start --address="$RAY_ADDRESS" \
        --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="$gpus" --disable-usage-stats --block &
done
sleep 15
ray status

# every training stage sends its runs to the cluster; a quarter of a GPU per run suits the
# papers' small CNNs (use 1 for ResNet-50 on Clothing1M). The tracking server, if any:
# export MLFLOW_TRACKING_URI=http://tracking-host:5000
export NOISYLABELS_EXECUTOR=ray NOISYLABELS_GPUS_PER_RUN=${NOISYLABELS_GPUS_PER_RUN:-0.25}
dvc exp run "$@"
ray stop
