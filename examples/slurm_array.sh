#!/bin/bash
# A sweep as a Slurm array job: every array task trains one shard of the models into the shared
# store (group k of the sweep belongs to shard k mod N). From the repository root:
#
#   transfer-influence init examples/split_fashion.toml
#   sbatch examples/slurm_array.sh examples/split_fashion.toml
#   transfer-influence status examples/split_fashion.toml
#   transfer-influence estimate examples/split_fashion.toml
#
# `init` creates the store once, before the tasks start writing into it. A killed or failed task
# is resumed by resubmitting it (`sbatch --array=3 examples/slurm_array.sh CONFIG`): it skips the
# models already written. `status` shows how many models are done; `estimate` uses the completed
# ones. The store and the data (TRANSFER_INFLUENCE_DATA) must be on a file system every node
# sees. Change --array to use more or fewer tasks; the shard count follows it.
#SBATCH --job-name=transfer-influence
#SBATCH --array=0-7
#SBATCH --cpus-per-task=2
#SBATCH --time=04:00:00
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail

CONFIG=${1:?usage: sbatch examples/slurm_array.sh CONFIG}
NUM_SHARDS=${SLURM_ARRAY_TASK_COUNT:?run this script with sbatch --array}
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

transfer-influence worker "$CONFIG" --shard "$SLURM_ARRAY_TASK_ID" --num-shards "$NUM_SHARDS" --quiet
