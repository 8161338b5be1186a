#!/usr/bin/env bash
# Builds the virtual environment in which CI rehearses benchmarks/device_check.sh on the CPU: Python 3.12 with the
# GPU image's versions of what fttrace uses (jax 0.11.2 with the CPU jaxlib in place of the CUDA plugin), and
# without fttrace, ml-collections or torch (the image's torch is a CUDA build; the torch step is skipped there).
# Needs network; the rehearsal itself then runs offline:
#
#   bash benchmarks/rehearsal_env.sh /tmp/rehearsal-venv
#   bash benchmarks/wheelhouse.sh .whl
#   PATH=/tmp/rehearsal-venv/bin:$PATH PIP_NO_INDEX=1 DEVICE_CHECK_REHEARSAL=1 WHEELHOUSE=.whl OUT=/tmp/rehearsal \
#     bash benchmarks/device_check.sh
#   FTTRACE_REHEARSAL_OUT=/tmp/rehearsal python -m pytest -q tests/test_device_check.py
#
# PYTHON312: the interpreter to build it with (default: pyenv's 3.12.1, else python3.12).
set -euo pipefail

venv=${1:?usage: benchmarks/rehearsal_env.sh VENV}
python=${PYTHON312:-}
if [[ -z $python ]]; then
  python=$(command -v pyenv > /dev/null && echo "$(pyenv root)/versions/3.12.1/bin/python" || true)
  [[ -x $python ]] || python=$(command -v python3.12)
fi
"$python" -m venv "$venv"
# The image's versions where they are known (jax, jaxlib, numpy, sentencepiece), else the newest that resolve with
# jax 0.11.2; setuptools builds fttrace offline (--no-build-isolation), as the image's does. Jinja2 stands in for
# what the image's torch brings with it (torch requires Jinja2; flax brings rich).
"$venv/bin/python" -m pip install --quiet \
  jax==0.11.2 jaxlib==0.11.2 numpy==2.5.2 sentencepiece==0.2.2 \
  flax==0.12.12 optax==0.2.8 orbax-checkpoint==0.12.8 chex==0.1.92 etils==1.15.0 \
  pandas==3.1.1 pyarrow==26.0.1 scipy==1.18.1 statsmodels==0.15.0 matplotlib==3.11.2 tensorboard==2.21.0 \
  absl-py==2.5.1 PyYAML==6.0.4 setuptools==84.2.1 pytest==9.2.0 Jinja2==3.1.6
"$venv/bin/python" -c "import jax; print('rehearsal environment:', '$venv', 'jax', jax.__version__, jax.default_backend())"
