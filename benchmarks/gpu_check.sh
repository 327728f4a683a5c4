#!/usr/bin/env bash
# One-shot CUDA check (issues 15, 21), for a fresh GPU machine that has only this repository:
# checks the driver first (one line within seconds when there is none), installs the CUDA build of
# torch (in .gpu_check_venv when a CPU build is installed) and the missing dependencies, then checks
# bf16/fp16/fp32 parity against the CPU fp32 forward (fp32 gated with TF32 off), times the bf16
# forward at context 1/4/8, times the flex attention kernel against sdpa and records the winner
# (pipelines/attention_record.json), runs `vos run` end to end and measures torch.compile / CUDA
# graphs against eager, all within --budget (450 s by default; what does not fit is reported "not
# measured" with the reason). Writes the gpu_check section of docs/benchmarks.md, and
# $OUT/gpu_check.json + $OUT/gpu_check.md (+ $OUT/attention_record.json) when $OUT is set.
#
#   bash benchmarks/gpu_check.sh                        # synthetic 854x480 clip, everything
#   bash benchmarks/gpu_check.sh --frames DIR --first-mask PNG --peak-tflops 989
#   bash benchmarks/gpu_check.sh --no-install --no-compile
#
# Options are those of benchmarks/gpu_check.py (--help); PYTHON=... picks the interpreter.
# Exit status: 0 all checks passed, 1 a check failed, 2 bad arguments or inputs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "gpu_check.sh: error: $PYTHON not found (set PYTHON=/path/to/python3.10+)" >&2
    exit 2
fi
exec "$PYTHON" benchmarks/gpu_check.py --compile "$@"
