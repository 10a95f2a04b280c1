#!/bin/sh
# The scoring benchmark's figures on a GPU machine whose python3 has torch (CUDA), onnxruntime,
# onnx, tokenizers, numpy and Pillow but not Apache Beam nor this project's other dependencies:
# `--no-stage` leaves the Beam stage out. First the towers on the GPU (torch; ONNX Runtime too
# where it has its CUDA provider), then ONNX Runtime against torch on all the machine's cores.
# Each run ends with its JSON line; the GPU run's `torch_pairs_per_s` is `estimate`'s
# clip_gpu_pairs_per_s and its `reads_pairs_per_s` clip_reads_pairs_per_s (pipeline/figures.json).
#
#     sh benchmarks/clip_gpu.sh [--quick]
set -e
cd "$(dirname "$0")/.."
export PYTHONPATH=. PYTHONUNBUFFERED=1
python3 benchmarks/clip.py --no-stage --device cuda "$@"
python3 benchmarks/clip.py --no-stage --device cpu --threads "$(nproc)" --pairs 256 --torch-pairs 128 "$@"
