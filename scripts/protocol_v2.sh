#!/usr/bin/env bash
# CPU protocol v2 of docs/results.md (issue #12): the paper's pretrained setting at CPU scale.
#
#   bash scripts/pretrain_protocol_v2.sh       # first: the P-pretrained ViT-Tiny and ResNet18 (about 3.8 core-hours)
#   bash scripts/protocol_v2.sh                # then everything else (resumable: run it again to continue)
#   python scripts/protocol_v2_report.py runs/protocol_v2   # the report
#
# Fixed before any result was seen (the pretrained weights are the only input from step 1):
#   1. Data. CIFAR-10 train is cut by the fixed seed PC_SPLIT_SEED (20240) into P (pretraining) and C
#      (condensation), 2,500 images a class each; every set is condensed from C only (--real-subset C), the random
#      arm draws from C. The models were pretrained on P.
#   2. Condensation: the HMDC example's cpu preset (IPC 1, multi-formation factor 2, 200 real images a class from C)
#      with 10 image updates per outer iteration and ViT-Tiny at patch 8 on 32x32 (the pretrained stand-in's shape).
#      Arms: hmdc (ConvNet-3 + ViT-Tiny_ft: the P weights reloaded with a new head every outer iteration),
#      single_model (ConvNet-3 alone), homogeneous (ConvNet-3 + ConvNet-3), init (the k-means multi-formation start,
#      no update: the single-model run at 0 updates), random (1 real image a class from C).
#   3. The curve. The single-model arm, seed 0, is stored at 0, 30, 100, 200 and 300 updates and each stored set is
#      trained on ConvNet-3, ResNet18_ft and ViT-Tiny_ft (one training seed).
#   4. N, the protocol's number of updates: with F(u) the mean accuracy of ResNet18_ft and ViT-Tiny_ft at u
#      updates, N is the smallest u of 30, 100, 200 with F(next) - F(u) < 0.5 points (flat, or turned down); if
#      none, the curve still rises at 200 and N is 200, the budget's limit (10 hours of this machine in all). Written
#      to OUT/N.
#   5. Three condensation seeds (0, 1, 2) of every arm at N. Every set is trained on ConvNet-3 (scratch),
#      ResNet18_ft, ViT-Tiny_ft (the P weights, fine-tuned on the set), ResNet18 and ViT-Tiny (scratch): the hmdc
#      evaluation protocol, 200 epochs, tested once after the last, two training seeds.
set -euo pipefail

OUT=${OUT:-runs/protocol_v2}
LANES=${LANES:-2}
DATA=${DATA:-data/cifar10}
PRETRAINED=${PRETRAINED:-runs/pretrain}
W_VIT=$PRETRAINED/vit_tiny_p8_32/weights.pt
W_RESNET=$PRETRAINED/resnet18_64/weights.pt
CURVE="0 3 10 20 30"   # outer iterations of 10 updates: 0, 30, 100, 200, 300 updates
SEEDS="0 1 2"
ARMS="hmdc single_model homogeneous"

COMMON=(--preset cpu --data-root "$DATA" --real-subset C --patch-size-b 8 --inner-steps 10 --device cpu --quiet)
EVAL=(--protocol hmdc --patch-size 8 --epochs 200 --eval-every 0 --data-root "$DATA" --device cpu --quiet)
FT_MODELS="convnet,resnet18@weights=$W_RESNET@label=resnet18_ft,vit_tiny_patch16_224@weights=$W_VIT@label=vit_tiny_ft"
ALL_MODELS="$FT_MODELS,resnet18,vit_tiny_patch16_224"

arm_flags() {
  case "$1" in
    hmdc) echo "--weights-b $W_VIT" ;;                            # ConvNet-3 + ViT-Tiny_ft, balancer, distillation
    single_model) echo "--single-model" ;;                       # ConvNet-3 gradient matching alone
    homogeneous) echo "--model-b convnet --lr-model-b 0.01" ;;   # two ConvNet-3s
    *) echo "unknown arm $1" >&2; return 1 ;;
  esac
}

condense() {  # condense ARM SEED ITERATIONS...: the run reaches each count of outer iterations and stores its set
  local arm=$1 seed=$2 dir="$OUT/sets/$1_s$2"
  shift 2
  mkdir -p "$OUT/snapshots" "$OUT/sets"
  for n in "$@"; do
    local snap; snap="$OUT/snapshots/${arm}_s${seed}_u$(printf %04d $((n * 10))).pt"
    [[ -f "$snap" ]] && continue
    local start; start=$(date +%s)
    if [[ -f "$dir/checkpoint.pt" ]]; then
      python examples/hmdc_cifar10.py --resume --out "$dir" --iterations "$n" --data-root "$DATA" --device cpu \
        --quiet >> "$dir.log" 2>&1
    else
      # shellcheck disable=SC2046
      python examples/hmdc_cifar10.py "${COMMON[@]}" $(arm_flags "$arm") --seed "$seed" --iterations "$n" \
        --out "$dir" > "$dir.log" 2>&1
    fi
    cp "$dir/synthetic.pt" "$snap.tmp" && mv "$snap.tmp" "$snap"
    echo "$arm seed $seed: $((n * 10)) updates, $(( $(date +%s) - start )) s" | tee -a "$OUT/times.log"
  done
}

random_set() {  # random_set SEED
  local snap="$OUT/snapshots/random_s$1.pt"
  [[ -f "$snap" ]] && return 0
  python -m hmdc_modules.evaluate random --ipc 1 --seed "$1" --subset C --data-root "$DATA" --out "$snap" \
    --overwrite --quiet
}

evaluate() {  # evaluate NAME GROUP MODELS SEEDS EVAL_OUT: waits for OUT/snapshots/NAME.pt, then trains on it
  local snap="$OUT/snapshots/$1.pt"
  until [[ -f "$snap" ]]; do sleep 15; done
  python -m hmdc_modules.evaluate "$snap" --name "$1" --group "$2" --models "$3" --seeds "$4" "${EVAL[@]}" \
    --out "$OUT/$5" >> "$OUT/eval.log" 2>&1
  echo "evaluated $1 ($3)"
}

lanes() { OMP_NUM_THREADS=1 xargs -P "$LANES" -L 1 bash "$0"; }

main() {  # the whole body is parsed before it runs, so editing this file mid-run is safe
case "${1:-all}" in
  condense) condense "${@:2}" ;;
  random) random_set "$2" ;;
  evaluate) evaluate "$2" "$3" "$4" "$5" "$6" ;;
  all)
    for w in "$W_VIT" "$W_RESNET"; do
      [[ -f $w ]] || { echo "missing $w: run scripts/pretrain_protocol_v2.sh first" >&2; exit 2; }
    done
    mkdir -p "$OUT"
    # 3: the curve
    jobs=("condense single_model 0 $CURVE")
    for n in $CURVE; do
      u=$(printf %04d $((n * 10)))
      jobs+=("evaluate single_model_s0_u$u single_model_u$u $FT_MODELS 1 curve")
    done
    printf '%s\n' "${jobs[@]}" | lanes
    # 4: N
    [[ -f "$OUT/N" ]] || { python scripts/protocol_v2_report.py "$OUT" --choose > "$OUT/N.tmp" && mv "$OUT/N.tmp" "$OUT/N"; }
    n=$(cat "$OUT/N"); u=$(printf %04d "$n")
    echo "N = $n updates"
    # 5: every arm and seed at N, then every set on the five models
    jobs=()
    for seed in $SEEDS; do
      # the single-model run stores its start (the init arm) on its way to N: one job, one run folder
      jobs+=("condense hmdc $seed $((n / 10))" "condense homogeneous $seed $((n / 10))"
             "condense single_model $seed 0 $((n / 10))" "random $seed")
    done
    printf '%s\n' "${jobs[@]}" | lanes
    jobs=()
    for seed in $SEEDS; do
      for arm in $ARMS; do jobs+=("evaluate ${arm}_s${seed}_u$u $arm $ALL_MODELS 2 eval"); done
      jobs+=("evaluate single_model_s${seed}_u0000 init $ALL_MODELS 2 eval" "evaluate random_s$seed random $ALL_MODELS 2 eval")
    done
    printf '%s\n' "${jobs[@]}" | lanes
    python scripts/protocol_v2_report.py "$OUT" > "$OUT/report.md"
    echo "report: $OUT/report.md"
    ;;
  *) echo "usage: bash scripts/protocol_v2.sh [all | condense ARM SEED ITERATIONS... | random SEED | evaluate ...]" >&2
     exit 2 ;;
esac
}

main "$@"; exit $?
