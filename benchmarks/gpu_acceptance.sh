#!/usr/bin/env bash
# The GPU measurements of the retraining and sharding issues, for a lent machine with little time.
#
#   part1: training-step throughput of the fast recipe (NAS-Bench-201 best cell at K = 1 and 4 steps per
#          dispatch, DARTS_V2 at K = 4, bfloat16), then DARTS_V2 and the NB201 best cell trained with the
#          fast recipe on 45,000 CIFAR-10 images (5,000 held out as the test split), the epoch counts chosen
#          from the measured images/s to fit ~120 s and ~60 s of training.
#   part2: the search iterations with and without the sharding wrapper on one GPU; float32 throughput.
#
# Run from the repository root with data/gpu/ holding ../shared/datasets/cifar10-jpeg/{train.npz,to_arrays.py}
# and OUT set to a folder for the results:  OUT=/tmp/out bash benchmarks/gpu_acceptance.sh part1
set -uo pipefail
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
part=${1:?usage: gpu_acceptance.sh part1|part2}
exec > >(tee -a "$OUT/log_$part.txt") 2>&1

if [ "$part" = part1 ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import jax, flax, optax, chex, orbax.checkpoint; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, 'chex', chex.__version__, jax.devices())" || exit 1
  $PY -c "import asose_jax.retrain, asose_jax.train" || exit 1
  time $PY data/gpu/to_arrays.py /tmp/cifar10.npz --test 5000 || exit 1

  $PY benchmarks/train_throughput.py --genotypes NB201_BEST --dtypes bfloat16 --dispatch 1 4 --steps 10 \
    --out "$OUT/train_throughput_nb201_gpu.json"
  $PY benchmarks/train_throughput.py --genotypes DARTS_V2 --dtypes bfloat16 --dispatch 4 --steps 6 \
    --out "$OUT/train_throughput_darts_v2_gpu.json"

  epochs() {  # epochs that fit $2 seconds of training at the benchmark's last images/s
    $PY -c "import json, sys; r = json.load(open(sys.argv[1]))['rows'][-1]['images_per_s']; \
print(max(2, min(40, int(float(sys.argv[2]) * r / 45000))))" "$1" "$2" 2>/dev/null || echo "$3"
  }
  for job in "DARTS_V2 $OUT/train_throughput_darts_v2_gpu.json 120 8 240" \
             "NB201_BEST $OUT/train_throughput_nb201_gpu.json 60 10 150"; do
    set -- $job
    n=$(epochs "$2" "$3" "$4")
    echo "== $1: fast recipe, $n epochs"
    timeout "$5" $PY experiments/cifar10_train.py --genotype "$1" --recipe fast --epochs "$n" \
      --data npz:/tmp/cifar10.npz --workdir "/tmp/runs/$1" --compilation-cache /tmp/xla --log-every 40
    tar czf "$OUT/run_$1.tgz" -C /tmp/runs "$1"
  done
else
  $PY benchmarks/sharding_overhead.py --device-counts 1 --init-channels 32 --depth 4 --batch-size 256 --steps 20 \
    --out "$OUT/sharding_gpu.json"
  $PY benchmarks/train_throughput.py --genotypes NB201_BEST --dtypes float32 --dispatch 4 --steps 10 \
    --out "$OUT/train_throughput_nb201_float32_gpu.json"
fi
