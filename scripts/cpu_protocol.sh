#!/usr/bin/env bash
# The CPU-scale protocol of docs/results.md: condense CIFAR-10 at IPC 1 with every arm and 3 condensation seeds,
# then train ConvNet-3, ResNet18 and ViT-Tiny on each set and test them on the full test set.
#
#   bash scripts/cpu_protocol.sh              # everything (resumable: run it again to continue)
#   LANES=1 bash scripts/cpu_protocol.sh      # one job at a time (default 2 jobs, 1 thread each)
#   OUT=runs/other bash scripts/cpu_protocol.sh
#
# Each job runs single-threaded; LANES jobs run side by side. A finished condensation leaves DONE (holding its wall
# seconds) in its run folder and is skipped next time; an unfinished one continues from its checkpoint. Evaluation
# cells are resumable on their own (see `python -m hmdc_modules.evaluate --help`).
set -euo pipefail

OUT=${OUT:-runs/protocol}
LANES=${LANES:-2}
SEEDS=${SEEDS:-"0 1 2"}
DATA=${DATA:-data/cifar10}
ARMS="hmdc no_balancer no_distillation homogeneous single_model random"

# Condensation: the example's cpu preset with ViT-Tiny at patch 8 (17 tokens) and 3 outer x 10 image updates.
COMMON=(--preset cpu --data-root "$DATA" --patch-size-b 8 --iterations 3 --inner-steps 10 --device cpu --quiet)
# Evaluation: the hmdc protocol (the HMDC authors' recipe, named explicitly) shortened to 200 epochs, tested once
# after the last on all 10,000 test images (so "best" = "final": no selection on the test set); one training seed
# per set, so the spread over an arm's three sets is the condensation's variance plus the evaluation's.
EVAL=(--protocol hmdc --models convnet,resnet18,vit_tiny_patch16_224 --patch-size 8 --seeds 1 --epochs 200 --eval-every 0
      --data-root "$DATA" --device cpu --quiet)

arm_flags() {
  case "$1" in
    hmdc) echo "" ;;                                   # ConvNet-3 + ViT-Tiny, balancer, distillation
    no_balancer) echo "--no-balancer" ;;               # equal weights
    no_distillation) echo "--no-distillation" ;;       # two gradient-matching losses only
    homogeneous) echo "--model-b convnet --lr-model-b 0.01" ;;  # ConvNet-3 + ConvNet-3: two models, one family
    single_model) echo "--single-model" ;;             # ConvNet-3 gradient matching alone (DC-style)
    *) echo "unknown arm $1" >&2; return 1 ;;
  esac
}

condense() {  # condense ARM SEED
  local arm=$1 seed=$2 dir="$OUT/sets/$1_s$2"
  [[ -f "$dir/DONE" ]] && return 0
  local start; start=$(date +%s)
  if [[ "$arm" == random ]]; then
    # no DONE yet: a set left by an interrupted draw is redrawn (the draw is deterministic)
    python -m hmdc_modules.evaluate random --ipc 1 --seed "$seed" --data-root "$DATA" --out "$dir" --overwrite --quiet
  else
    local resume=(); [[ -f "$dir/checkpoint.pt" ]] && resume=(--resume)
    # shellcheck disable=SC2046
    python examples/hmdc_cifar10.py "${COMMON[@]}" $(arm_flags "$arm") --seed "$seed" --out "$dir" "${resume[@]}" \
      > "$dir.log" 2>&1
  fi
  echo $(( $(date +%s) - start )) > "$dir/DONE"
  echo "condensed $arm seed $seed in $(cat "$dir/DONE") s"
}

evaluate() {  # evaluate ARM SEED: waits for the set, then trains the pool on it
  [[ " $ARMS " == *" $1 "* ]] || { echo "not an arm of this protocol: $1 (arms: $ARMS)" >&2; return 0; }
  local dir="$OUT/sets/$1_s$2"
  until [[ -f "$dir/DONE" ]]; do sleep 15; done
  python -m hmdc_modules.evaluate "$dir" --name "$1_s$2" --group "$1" "${EVAL[@]}" --out "$OUT/eval" \
    >> "$OUT/eval.log" 2>&1
  echo "evaluated $1 seed $2"
}

main() {  # the whole body is parsed before it runs, so editing this file mid-run is safe
case "${1:-all}" in
  condense) condense "$2" "$3" ;;
  evaluate) evaluate "$2" "$3" ;;
  all)
    mkdir -p "$OUT/sets"
    jobs=()
    for seed in $SEEDS; do for arm in $ARMS; do jobs+=("condense $arm $seed"); done; done
    for seed in $SEEDS; do for arm in $ARMS; do jobs+=("evaluate $arm $seed"); done; done
    printf '%s\n' "${jobs[@]}" | OMP_NUM_THREADS=1 xargs -P "$LANES" -L 1 bash "$0"
    # one last pass over every set writes the tables of the whole folder (all cells are done: nothing retrains)
    sets=(); names=(); for seed in $SEEDS; do for arm in $ARMS; do
      sets+=("$OUT/sets/${arm}_s$seed"); names+=(--name "${arm}_s$seed" --group "$arm"); done; done
    OMP_NUM_THREADS=1 python -m hmdc_modules.evaluate "${sets[@]}" "${names[@]}" "${EVAL[@]}" --out "$OUT/eval"
    ;;
  *) echo "usage: bash scripts/cpu_protocol.sh [all | condense ARM SEED | evaluate ARM SEED]" >&2; exit 2 ;;
esac
}

main "$@"; exit $?
