#!/usr/bin/env bash
# GPU measurements for a lent machine with little time; results (logs, packed run directories) go to $OUT.
#
#   throughput  training-step images/s of the fast recipe (NB201_BEST at K = 1 and 4 steps per dispatch,
#               DARTS_V2 at K = 4, bfloat16)
#   nb201       NB201_BEST, fast recipe, 20 epochs on 45,000 CIFAR-10 images (5,000 held out as the test split)
#   darts       DARTS_V2, fast recipe, 10 epochs on the same data
#   sharding    the search iterations with and without the sharding wrapper on one GPU
#
# Run from the repository root with the machine's own Python (the project need not be installed: PYTHONPATH is
# set below) and data/gpu/cifar10.npz in the x_train, y_train, x_test, y_test layout (carry data/gpu):
#   OUT=/tmp/out bash benchmarks/gpu_acceptance.sh darts
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=.
PY=${PYTHON:-python3}
part=${1:?usage: gpu_acceptance.sh throughput|nb201|darts|sharding}
exec > >(grep --line-buffered -v cuda_timer | tee -a "$OUT/log_$part.txt") 2>&1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, \
jax.devices())" || exit 1

train() {  # genotype, epochs: the fast recipe on 45,000 images, the run directory packed into $OUT
  $PY experiments/cifar10_train.py --genotype "$1" --recipe fast --epochs "$2" --data npz:data/gpu/cifar10.npz \
    --workdir "/tmp/runs/$1" --compilation-cache /tmp/xla --log-every 400
  tar czf "$OUT/run_$1.tgz" -C /tmp/runs "$1"
}

case "$part" in
  throughput)
    $PY benchmarks/train_throughput.py --genotypes NB201_BEST --dtypes bfloat16 --dispatch 1 4 --steps 10 \
      --out "$OUT/train_throughput_nb201_gpu.json"
    $PY benchmarks/train_throughput.py --genotypes DARTS_V2 --dtypes bfloat16 --dispatch 4 --steps 6 \
      --out "$OUT/train_throughput_darts_v2_gpu.json" ;;
  nb201) train NB201_BEST 20 ;;
  darts) train DARTS_V2 10 ;;
  sharding)
    $PY benchmarks/sharding_overhead.py --device-counts 1 --init-channels 16 --depth 4 --batch-size 256 --steps 20 \
      --check-steps 2 --out "$OUT/sharding_gpu.json" ;;
  *) echo "unknown part $part"; exit 2 ;;
esac
