#!/usr/bin/env bash
# The wheels the GPU image lacks, downloaded where there is network, to carry beside the source to a machine that
# has none: benchmarks/device_check.sh installs them with pip --no-index --no-deps (WHEELHOUSE=DIR).
#
# The GPU image (Python 3.12, x86-64) holds jax with its CUDA plugin, flax, optax, orbax-checkpoint, chex, etils,
# numpy, pandas, pyarrow, scipy, statsmodels, matplotlib, absl-py and PyYAML; of fttrace's requirements it lacks
# ml-collections alone (pure Python; its own needs, absl-py and PyYAML, are there). WHEELS is the one list.
#
#   bash benchmarks/wheelhouse.sh          into .whl (git-ignored)
#   bash benchmarks/wheelhouse.sh DIR
set -euo pipefail

WHEELS=(
  ml-collections==1.1.0
)

dir=${1:-.whl}
mkdir -p "$dir"
for wheel in "${WHEELS[@]}"; do
  python3 -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --no-deps -d "$dir" "$wheel"
done
echo "fetched into $dir:"
ls -l "$dir"/*.whl | awk '{printf "  %s  %d bytes\n", $NF, $5}'
echo "total: $(du -ch "$dir"/*.whl | tail -n 1 | cut -f1)"
