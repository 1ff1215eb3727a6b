#!/usr/bin/env bash
# The checks that need a GPU, as one script for a session that is lent one (e.g. an H200):
#   - predict on CUDA equals predict on the CPU (the test that skips without a GPU);
#   - predict's speed on CUDA (bench_predict.py --device cuda);
#   - GHN-3: parity with the reference on CUDA, CUDA equals CPU, speed and GHN-3-XL end to end (bench_ghn3.py);
#   - finetune's training step against a bare PyTorch loop, ResNet-50 at 32 px, batch 96, bf16 (target >= 0.8);
#   - a short finetune and train-ghn run on CUDA end to end;
#   - experiment throughput: 4 few-shot ResNet-18 runs packed on one GPU (--jobs 4 --runs-per-gpu 4)
#     against one run at a time (--jobs 1), 8 runs each (bench_experiment_jobs.py).
# Results go to ${OUT:-benchmarks/results}/gpu_checks.md. Without a GPU each step says so and the script exits 1.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
report="$out/gpu_checks.md"
python -c "import ghnorth_cli, torch" 2>/dev/null \
  || { echo "gpu_checks: install ghnorth first (pip install -e .)" >&2; exit 1; }
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "gpu_checks: no CUDA device here" >&2; exit 1; }
export PYTHONUNBUFFERED=1
{
  echo "# GPU checks, $(date -u +%Y-%m-%dT%H:%MZ)"
  python -c "import torch; print('device:', torch.cuda.get_device_name(), '| torch', torch.__version__)"
  echo; echo "## predict on CUDA equals CPU"; echo '```'
  python -m pytest -q tests/test_predict.py -k cuda 2>&1 | tail -3
  echo '```'; echo; echo "## predict speed"
  python benchmarks/bench_predict.py --device cuda --out "$out/predict_cuda" 2>&1 | tail -6
  echo; echo "## GHN-3 on CUDA: parity with the reference, equal to CPU"; echo '```'
  python -m pytest -q tests/test_ghn3_parity.py tests/test_ghn3_orth.py -k cuda 2>&1 | tail -3
  echo '```'; echo; echo "## GHN-3 speed, memory and GHN-3-XL end to end on CUDA"
  python benchmarks/bench_ghn3.py --device cuda --out "$out/ghn3_cuda" 2>&1 | tail -10
  echo; echo "## finetune step vs bare loop"
  python benchmarks/bench_finetune.py cuda 2>&1 | tail -4
  echo; echo "## end to end"; echo '```'
  ghnorth finetune --data fashion-mnist --labels-per-class 100 --arch resnet18 --init orth --epochs 2 \
    --device cuda --metrics "$out/ft_cuda.json" 2>&1 | tail -2
  ghnorth train-ghn --data fashion-mnist --classes 0-4 --steps 20 --meta-batch 4 --batch-size 32 \
    --device cuda -o "$out/ghn_cuda.safetensors" 2>&1 | tail -2
  echo '```'
  echo; echo "## packed few-shot runs on one GPU"
  python benchmarks/bench_experiment_jobs.py --device cuda --jobs 1,4 --runs 8 --arch resnet18 \
    --labels-per-class 100 --img-size 32 --epochs 2 2>&1 | tail -9
} | tee "$report"
