"""The passes outside gradient matching, timed against their baselines in one process, interleaved.

    python benchmarks/training_passes.py                 # 1 thread, 5 rounds (the first is a warm-up)
    python benchmarks/training_passes.py --threads 2 --rounds 9

At the example's cpu-preset shapes (batch 64 of 32x32 images; ViT-Tiny at patch 4, 65 tokens; ConvNet-3), it
prints the median time of each variant and its ratio to the baseline:

- ViT-Tiny training step (forward, cross-entropy, backward) and no-grad forward: fused attention
  (``fused_attention``, what ``HMDCObjective.training_loss``/``alignment_loss`` use) against the explicit path
  (what gradient matching needs);
- ConvNet-3 training step: ``channels_last`` against the default contiguous layout.

No assertion: a benchmark reports, it does not judge.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from hmdc_modules.adapters.timm import fused_attention
from hmdc_modules.condensation import create_model


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, the first one a warm-up (default 5)")
    parser.add_argument("--batch", type=int, default=64, help="images per pass (default 64: the cpu preset's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(10, (args.batch,))
    vit = create_model("vit_tiny_patch16_224", 10, image_size=32, patch_size=4)  # explicit attention (matching)
    convnet = create_model("convnet", 10)
    x_last = x.contiguous(memory_format=torch.channels_last)

    def vit_step() -> None:
        F.cross_entropy(vit(x), y).backward()

    def vit_step_fused() -> None:
        with fused_attention(vit):
            loss = F.cross_entropy(vit(x), y)
        loss.backward()

    def vit_forward() -> None:
        with torch.no_grad():
            vit(x)

    def vit_forward_fused() -> None:
        with torch.no_grad(), fused_attention(vit):
            vit(x)

    def convnet_step() -> None:
        F.cross_entropy(convnet.to(memory_format=torch.contiguous_format)(x), y).backward()

    def convnet_step_last() -> None:
        F.cross_entropy(convnet.to(memory_format=torch.channels_last)(x_last), y).backward()

    pairs = {
        "ViT-Tiny training step": (vit_step, vit_step_fused, "fused attention"),
        "ViT-Tiny no-grad forward": (vit_forward, vit_forward_fused, "fused attention"),
        "ConvNet-3 training step": (convnet_step, convnet_step_last, "channels_last"),
    }
    times: dict[tuple[str, int], list[float]] = {}
    for round_ in range(args.rounds):
        for name, variants in pairs.items():
            for which in (0, 1):
                seconds = timed(variants[which])
                if round_:
                    times.setdefault((name, which), []).append(seconds)
    print(f"threads {args.threads}, batch {args.batch}, {args.rounds - 1} timed rounds (medians)")
    print(f"{'pass':<28} {'baseline s':>11} {'variant':<16} {'variant s':>10} {'ratio':>7}")
    for name, (_, _, variant) in pairs.items():
        base, new = statistics.median(times[(name, 0)]), statistics.median(times[(name, 1)])
        print(f"{name:<28} {base:>11.3f} {variant:<16} {new:>10.3f} {new / base:>6.2f}x")


if __name__ == "__main__":
    main()
