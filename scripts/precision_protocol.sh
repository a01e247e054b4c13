#!/usr/bin/env bash
# Fidelity of the result under bf16 (issue #17): one arm of the CPU protocol v1 (HMDC, condensation seed 0),
# condensed in fp32 and in bf16, each set trained with the same training seeds; the report pairs them by training
# seed and sets the difference against the training-seed spread of either set.
#
#   bash scripts/precision_protocol.sh                       # everything (resumable: run it again to continue)
#   python scripts/precision_report.py runs/precision        # the report (Markdown)
#
# Fixed before any result was seen:
#   1. Condensation: scripts/cpu_protocol.sh's hmdc arm, seed 0 (the example's cpu preset, ViT-Tiny at patch 8,
#      3 outer x 10 image updates), once with --precision fp32 and once with --precision bf16; one thread each,
#      side by side. Only the condensation's arithmetic differs.
#   2. Evaluation: cpu_protocol.sh's (the hmdc protocol, ConvNet-3, ResNet18 and ViT-Tiny from scratch, 200 epochs,
#      tested once after the last on the 10,000 test images), in fp32 for both sets, with training seeds 0, 1, 2.
#   3. Reported: per model and for the average over the three models, the bf16 set minus the fp32 set, paired by
#      training seed (mean and 95% Student-t interval), beside each set's standard deviation over training seeds.
set -euo pipefail

OUT=${OUT:-runs/precision}
LANES=${LANES:-2}
DATA=${DATA:-data/cifar10}
PRECISIONS="fp32 bf16"

COMMON=(--preset cpu --data-root "$DATA" --patch-size-b 8 --iterations 3 --inner-steps 10 --device cpu --quiet
        --seed 0)
EVAL=(--protocol hmdc --models convnet,resnet18,vit_tiny_patch16_224 --patch-size 8 --seeds 3 --epochs 200
      --eval-every 0 --precision fp32 --data-root "$DATA" --device cpu --quiet)

condense() {  # condense PRECISION
  local dir="$OUT/sets/hmdc_$1_s0"
  [[ -f "$dir/DONE" ]] && return 0
  mkdir -p "$OUT/sets"
  local start; start=$(date +%s)
  local resume=(); [[ -f "$dir/checkpoint.pt" ]] && resume=(--resume)
  python examples/hmdc_cifar10.py "${COMMON[@]}" --precision "$1" --out "$dir" "${resume[@]}" >> "$dir.log" 2>&1
  echo $(( $(date +%s) - start )) > "$dir/DONE"
  echo "condensed hmdc in $1 in $(cat "$dir/DONE") s" | tee -a "$OUT/times.log"
}

evaluate() {  # evaluate PRECISION: waits for the set, then trains the three models on it
  local dir="$OUT/sets/hmdc_$1_s0"
  until [[ -f "$dir/DONE" ]]; do sleep 15; done
  python -m hmdc_modules.evaluate "$dir" --name "hmdc_$1_s0" --group "$1" "${EVAL[@]}" --out "$OUT/eval_$1" \
    >> "$OUT/eval.log" 2>&1
  echo "evaluated the $1 set"
}

main() {  # the whole body is parsed before it runs, so editing this file mid-run is safe
case "${1:-all}" in
  condense) condense "$2" ;;
  evaluate) evaluate "$2" ;;
  all)
    mkdir -p "$OUT"
    jobs=()
    for p in $PRECISIONS; do jobs+=("condense $p"); done
    for p in $PRECISIONS; do jobs+=("evaluate $p"); done
    printf '%s\n' "${jobs[@]}" | OMP_NUM_THREADS=1 xargs -P "$LANES" -L 1 bash "$0"
    python scripts/precision_report.py "$OUT" > "$OUT/report.md"
    echo "report: $OUT/report.md"
    ;;
  *) echo "usage: bash scripts/precision_protocol.sh [all | condense PRECISION | evaluate PRECISION]" >&2; exit 2 ;;
esac
}

main "$@"; exit $?
