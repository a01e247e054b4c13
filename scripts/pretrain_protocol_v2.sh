#!/usr/bin/env bash
# CPU protocol v2, step 1: pretrain the stand-ins for ImageNet weights on the P half of CIFAR-10 train
# (hmdc_modules.condensation.splits, seed 20240: 2,500 images a class), one CPU thread, ViT first.
#
#   nohup nice -n 19 scripts/pretrain_protocol_v2.sh > runs/pretrain/protocol_v2.log 2>&1 &
#
# Resumable: run it again after any interruption. A finished model (weights.pt) is skipped, an unfinished one
# continues from its last checkpoint (--resume), a missing one starts.
#
# Measured on the 2-core CPU (1 thread, CPU time per training image, batch 128):
#   vit_tiny_patch16_224, patch 8 at 32x32: 14.7 ms  -> ~370 s an epoch of 25,000 images (+ ~50 s test)
#   resnet18 (timm, ImageNet stem) at 64x64: 19.0 ms -> ~475 s an epoch (+ ~60 s test)
#   (resnet18 at 32x32: 9.4 ms, but the stride-4 stem leaves a 1x1 map at layer 4 and learns poorly;
#    a 3x3 stride-1 stem with max-pool at 32x32: 18.6 ms, the same cost as 64x64 with the standard stem;
#    the CIFAR stem without max-pool: ~4x more.)
# Budget: 20 ViT epochs (~2.3 h) + 10 ResNet epochs (~1.5 h), about 3.8 h of one core.
# On a CPU with avx512_bf16 (1 thread, one training step of 128 images, fp32 / bf16 autocast, measured with both
# timed in turn): ViT-Tiny p8 at 32x32 6.85 / 5.57 ms an image, ResNet18 at 64x64 13.24 / 7.04 ms an image.
# PRECISION=bf16 trains under bf16 autocast there (weights stay float32); the default is fp32.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data/cifar10}
OUT=${OUT:-runs/pretrain}
THREADS=${THREADS:-1}
PRECISION=${PRECISION:-fp32}

run() {  # run <folder> <args...>
  local folder=$OUT/$1
  shift
  if [[ -f $folder/weights.pt ]]; then
    echo "$folder: finished, skipped"
    return 0
  fi
  local mode=()
  [[ -f $folder/checkpoint.pt || -f $folder/checkpoint.prev.pt ]] && mode=(--resume)
  python -m hmdc_modules.pretrain --data "$DATA" --subset P --out "$folder" --threads "$THREADS" \
    --precision "$PRECISION" --no-progress "${mode[@]}" "$@"
}

run vit_tiny_p8_32 --model vit_tiny_patch16_224 --image-size 32 --patch-size 8 --epochs 20 --warmup-epochs 2
run resnet18_64 --model resnet18 --image-size 64 --epochs 10 --warmup-epochs 1
