"""One HMDC class-step, measured against this machine's own limit, with a naive class-step as the baseline.

    python benchmarks/step.py                          # the paper's shapes and the cpu preset's, --device auto
    python benchmarks/step.py --shapes cpu --repeats 5
    python benchmarks/step.py --json runs/step.json    # also write every figure as JSON
    python benchmarks/step.py --precision fp32,bf16    # both arithmetics side by side, and bf16's fidelity

With several precisions (`--precision fp32,bf16`; `tf32` on CUDA), each step is timed at every precision in turn
(interleaved, so that a busy machine slows them alike), its share is taken of the matmul peak measured in the
same arithmetic, and the fidelity of each precision against fp32 is measured on one sampling class-step from the
same state: the cosine and relative error of the image gradient (and the lowest cosine of one stored image's
gradient), the relative error of each loss and of each balancer weight. FLOPs are the computation's: counted
once, in fp32.

A class-step is what one class costs in one image update of examples/hmdc_cifar10.py: augmentation and cutmix of
the real and the synthetic batch, one forward pass of each batch per model, gradient matching on each model, the
matched mutual-distillation term, and the gradient balancer's backward pass to the synthetic images (plus the
per-image gradient normalisation). It runs the library's `HMDCObjective` (the objective the example imports) with
the example's augmentation, so what is measured is what the example runs. Everything is measured in this one
process, in this order:

1. the float32 matmul peak (2048 x 2048, best of several; the threads torch uses),
2. per shape: FLOPs of a plain and a sampling class-step (torch.utils.flop_counter.FlopCounterMode: matmul,
   convolution and attention, as the method doc counts them), time (best and median of --repeats after a
   warm-up), achieved FLOP/s and share of the peak, the sampling step against the plain one, the time of the
   pieces outside the models' own passes (each timed alone at the step's shapes, see `outside_seconds`), and the
   peak memory of the step (CUDA: max_memory_allocated; CPU: the profiler's allocation record), and the plain
   step's FLOPs phase by phase (`Bench.phase_flops`),
3. the same for a naive class-step: a separate forward pass of every batch for every term, and on sampling steps a
   backward pass per loss plus one for the weighted total (as the reference implementation does).

The `tiny` shape (timm's test_vit) runs in seconds and is for checking the script, not for figures.

Gradient matching differentiates through gradients (double backward), which torch.compile cannot trace: all of it
runs eager.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from hmdc_modules import (
    FeatureMap,
    GradientBalancer,
    MutualDistillationLoss,
    SpatialSemanticDecomposer,
    auto_adapter,
    normalize_image_gradients,
    soft_cross_entropy,
)
from hmdc_modules.condensation import DifferentiableAugment, create_model, cutmix, decode_formation
from hmdc_modules.condensation.precision import PRECISIONS, check_precision, precision_context
from hmdc_modules.functional import gradient_distance
from hmdc_modules.objective import HMDCObjective

REPO = Path(__file__).resolve().parents[1]

SHAPES: dict[str, dict[str, Any]] = {
    # IPC 10 with multi-formation factor 2 (40 decoded images), 128 real images, ConvNet-3 at 32 + ViT-Tiny at 224
    "paper": {"ipc": 10, "factor": 2, "batch_real": 128, "image_size_b": 224, "patch_size_b": 16},
    # IPC 1 with factor 2 (4 decoded images), 64 real images, ConvNet-3 + ViT-Tiny with patch 4 at 32 (method doc §8)
    "cpu": {"ipc": 1, "factor": 2, "batch_real": 64, "image_size_b": 32, "patch_size_b": 4},
    # seconds on any CPU: timm's test_vit with patch 8, 8 real images (for checking the script, not for figures)
    "tiny": {"ipc": 1, "factor": 2, "batch_real": 8, "image_size_b": 32, "patch_size_b": 8, "model_b": "test_vit"},
}
REFERENCE = {"paper_plain_gflop": 3208.5, "paper_sampling_gflop": 4103.8, "plain_s": 23.6, "sampling_s": 36.0}


@dataclass(frozen=True)
class Shape:
    """The settings of one class-step (the example's flags of the same names)."""

    ipc: int
    factor: int
    batch_real: int
    image_size_b: int
    patch_size_b: int
    model_a: str = "convnet"
    model_b: str = "vit_tiny_patch16_224"
    distance: str = "sse"
    num_classes: int = 10


def augment_pair(shape: Shape, augment: DifferentiableAugment, x: Tensor, y: Tensor, seed: int, salt: int):
    """The example's shared-seed augmentation (one draw for the real and the synthetic batch), then cutmix."""
    x = augment(x, seed=seed)
    return cutmix(x, y, shape.num_classes, p=0.5, generator=torch.Generator().manual_seed(seed + salt))


def build_objective(shape: Shape, device: torch.device, balancer: GradientBalancer | None) -> HMDCObjective:
    """ConvNet-3 and model B behind adapters, the decomposer and the matcher, as the example builds them."""
    adapters = []
    for name, size, patch in ((shape.model_a, 32, None), (shape.model_b, shape.image_size_b, shape.patch_size_b)):
        model = create_model(name, shape.num_classes, image_size=size, patch_size=patch).to(device)
        adapters.append(auto_adapter(model, input_size=size if size != 32 else None))
    decomposer = SpatialSemanticDecomposer(adapters, image_size=32).to(device)
    return HMDCObjective(adapters, decomposer=decomposer, balancer=balancer, distance=shape.distance,
                         model_names=["a", "b"])  # fmt: skip


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 10, precision: str = "fp32") -> float:
    """Best matmul rate in FLOP/s (2 n^3 per product) in ``precision``: the product computed as the precision's
    context computes it. In bf16 (operands cast beforehand: the cast is not part of the rate) the faster of
    ``torch.mm`` and ``linear``, the two routes the models' products take (on a CPU without native bfloat16 they
    differ several times over)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    with precision_context(precision, device):
        if precision == "bf16":
            a, b = a.bfloat16(), b.bfloat16()
        products = (torch.mm, torch.nn.functional.linear) if precision == "bf16" else (torch.mm,)
        best = float("inf")
        for product in products:
            spent = 0.0
            for _ in range(repeats + 2):
                synchronize(device)
                t0 = time.perf_counter()
                product(a, b)
                synchronize(device)
                best, spent = min(best, time.perf_counter() - t0), spent + time.perf_counter() - t0
                if spent > 10:  # a slow route (bf16 without native support): its rate is known well enough
                    break
    return 2.0 * n**3 / best


def peak_memory(fn: Callable[[], None], device: torch.device) -> int:
    """Bytes allocated at the highest point of ``fn``, above what was allocated before it."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as handle:
            events = json.load(handle)["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]" and "args" in e]
    return int(max(totals, default=0))


def timed(fn: Callable[[], None], device: torch.device, repeats: int, warm_up: bool = True) -> list[float]:
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def count_flops(fn: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@dataclass
class Bench:
    """The objects of one class-step at one shape."""

    name: str
    cfg: Shape
    nets: HMDCObjective
    device: torch.device
    real_x: Tensor
    real_y: Tensor
    syn: Tensor
    augment: DifferentiableAugment = field(default_factory=DifferentiableAugment)
    distill: MutualDistillationLoss = field(default_factory=MutualDistillationLoss)
    balancer: GradientBalancer | None = None

    @classmethod
    def build(cls, name: str, device: torch.device) -> Bench:
        cfg = Shape(**SHAPES[name])
        torch.manual_seed(0)
        names = ("gm_a", "gm_b", "md")
        balancer = GradientBalancer(len(names), num_groups=1, interval=10, loss_names=names).to(device)
        nets = build_objective(cfg, device, balancer)
        real_x = torch.randn(cfg.batch_real, 3, 32, 32, device=device)
        real_y = torch.zeros(cfg.batch_real, dtype=torch.long, device=device)
        syn = torch.randn(cfg.ipc, 3, 32, 32, device=device).requires_grad_(True)
        bench = cls(name, cfg, nets, device, real_x, real_y, syn, balancer=balancer)
        bench.augment = bench.augment.to(device)
        return bench

    # -------------------------------------------------------------------------------------------- the steps

    def syn_batch(self) -> tuple[Tensor, Tensor]:
        syn_x = decode_formation(self.syn, self.cfg.factor)
        return syn_x, torch.zeros(syn_x.shape[0], dtype=torch.long, device=self.device)

    def ours(self, sample: bool) -> None:
        """The example's class-step: augmentation, the objective's losses, the balancer's backward, normalisation."""
        self.syn.grad = None
        syn_x, syn_y = self.syn_batch()
        xr, tr = augment_pair(self.cfg, self.augment, self.real_x, self.real_y, 7, salt=1)
        xs, ts = augment_pair(self.cfg, self.augment, syn_x, syn_y, 7, salt=2)
        losses = self.nets.losses(xr, tr, xs, ts)
        assert self.balancer is not None
        self.balancer.backward(losses, self.syn, group=0, sample=sample)
        self.syn.grad.copy_(normalize_image_gradients(self.syn.grad))

    def naive(self, sample: bool) -> None:
        """A separate forward pass of every batch for every term; per-loss backward passes on sampling steps.

        It updates the balancer as ``ours`` does, so both give the same image gradient from the same state.
        """
        cfg, nets, seed = self.cfg, self.nets, 7
        self.syn.grad = None
        syn_x, syn_y = self.syn_batch()
        xr, tr = augment_pair(cfg, self.augment, self.real_x, self.real_y, seed, salt=1)
        xs, ts = augment_pair(cfg, self.augment, syn_x, syn_y, seed, salt=2)
        with precision_context(nets.precision, self.device):
            losses = self._naive_losses(xr, tr, xs, ts)
        assert self.balancer is not None
        # the balancer's unfused path, as the reference runs it: on sampling steps one backward pass per loss to
        # measure the magnitudes, then the weighted total's backward pass to every leaf
        # (.forward, not __call__: FlopCounterMode's module tracker hooks the call's inputs, and a hook on the leaf
        # images breaks the per-loss torch.autograd.grad calls inside it)
        self.balancer.forward(losses, self.syn, group=0, sample=sample).backward()
        self.syn.grad.copy_(normalize_image_gradients(self.syn.grad))

    def _naive_losses(self, xr: Tensor, tr: Tensor, xs: Tensor, ts: Tensor) -> list[Tensor]:
        nets, losses = self.nets, []
        for m, adapter in enumerate(nets.adapters):  # gradient matching: its own forward passes
            ce_r = soft_cross_entropy(adapter(xr).logits, tr)
            ce_s = soft_cross_entropy(adapter(xs).logits, ts)
            losses.append(nets.matcher.match([ce_r], [ce_s], [nets.matcher.parameters_of(m)])[0])
        if nets.decomposer is not None:  # distillation: forward passes again
            md_r = self.distill(nets.decomposer([a(xr).features for a in nets.adapters]))
            md_s = self.distill(nets.decomposer([a(xs).features for a in nets.adapters]))
            losses.append(nets.matcher.match([md_r], [md_s], [nets.matcher.all_parameters()])[0])
        return [loss.float() for loss in losses]

    def phase_flops(self) -> dict[str, float]:
        """FLOPs of the plain class-step phase by phase: the same computation as `ours`, run in pieces.

        - forward: one forward pass of each batch per model, the decomposer and the distillation loss;
        - real gradients: the matched parameter gradients on the real batch (one backward pass per loss, no graph);
        - synthetic gradients: the same on the synthetic batch, with their graph (``create_graph=True``);
        - image backward: the balanced total's backward pass to the stored synthetic images only.
        """
        cfg, nets = self.cfg, self.nets
        flops: dict[str, float] = {}

        def counted(name: str, fn: Callable[[], Any]) -> Any:
            with FlopCounterMode(display=False) as counter:
                out = fn()
            flops[name] = flops.get(name, 0.0) + counter.get_total_flops()
            return out

        self.syn.grad = None
        syn_x, syn_y = self.syn_batch()
        xr, tr = augment_pair(cfg, self.augment, self.real_x, self.real_y, 7, salt=1)
        xs, ts = augment_pair(cfg, self.augment, syn_x, syn_y, 7, salt=2)
        params = [nets.matcher.parameters_of(m) for m in range(len(nets.adapters))]

        def losses(x: Tensor, t: Tensor) -> list[Tensor]:
            out = [adapter(x) for adapter in nets.adapters]
            terms = [soft_cross_entropy(o.logits, t) for o in out]
            if nets.decomposer is not None:
                terms.append(self.distill(nets.decomposer([o.features for o in out])))
            return terms

        real = counted("forward", lambda: losses(xr, tr))
        syn = counted("forward", lambda: losses(xs, ts))
        if nets.decomposer is not None:
            params.append(nets.matcher.all_parameters())

        def gradients(terms: list[Tensor], graph: bool) -> list[tuple[Tensor | None, ...]]:
            return [
                torch.autograd.grad(term, group, retain_graph=True, create_graph=graph, allow_unused=True)
                for term, group in zip(terms, params, strict=True)
            ]

        def distance(real_grads: tuple[Tensor | None, ...], syn_grads: tuple[Tensor | None, ...]) -> Tensor:
            # as the matcher does: a parameter a term does not reach (the classifier, for the distillation term) is
            # left out of the distance
            kept = [(r, s) for r, s in zip(real_grads, syn_grads, strict=True) if r is not None and s is not None]
            return gradient_distance([r for r, _ in kept], [s for _, s in kept], cfg.distance)

        real_grads = counted("real gradients", lambda: gradients(real, graph=False))
        syn_grads = counted("synthetic gradients", lambda: gradients(syn, graph=True))
        assert self.balancer is not None
        weights = self.balancer.weights(0).to(self.device)
        total = sum(w * distance(r, s) for w, r, s in zip(weights, real_grads, syn_grads, strict=True))
        counted("image backward", lambda: total.backward(inputs=[self.syn]))
        return {name: value / 1e9 for name, value in flops.items()}

    # ------------------------------------------------------------------------------------------ fidelity

    def sampling_result(self, precision: str) -> dict[str, Any]:
        """One sampling class-step in ``precision`` from the balancer's current state (restored afterwards): the
        losses, the balancer's new weights and the raw image gradient (before the per-image normalisation)."""
        assert self.balancer is not None
        state = {k: v.clone() if isinstance(v, Tensor) else v for k, v in self.balancer.state_dict().items()}
        self.nets.precision = check_precision(precision)
        try:
            self.syn.grad = None
            syn_x, syn_y = self.syn_batch()
            xr, tr = augment_pair(self.cfg, self.augment, self.real_x, self.real_y, 7, salt=1)
            xs, ts = augment_pair(self.cfg, self.augment, syn_x, syn_y, 7, salt=2)
            losses = self.nets.losses(xr, tr, xs, ts)
            self.balancer.backward(losses, self.syn, group=0, sample=True)
            return {
                "losses": torch.stack([loss.detach() for loss in losses]).double().cpu(),
                "weights": self.balancer.weights(0).double().cpu(),
                "grad": self.syn.grad.detach().double().cpu(),
            }
        finally:
            self.balancer.load_state_dict(state)
            self.nets.precision = "fp32"
            self.syn.grad = None

    def fidelity(self, precision: str) -> dict[str, Any]:
        """``precision`` against fp32 on one sampling class-step from the same state (see ``sampling_result``)."""
        ref, low = self.sampling_result("fp32"), self.sampling_result(precision)

        def rel(a: Tensor, b: Tensor) -> float:
            return float((a - b).norm() / b.norm().clamp_min(1e-300))

        def cos(a: Tensor, b: Tensor) -> float:
            return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))

        per_image = [cos(a, b) for a, b in zip(low["grad"], ref["grad"], strict=True)]
        names = self.nets.loss_names
        return {
            "grad_cosine": cos(low["grad"], ref["grad"]),
            "grad_rel_error": rel(low["grad"], ref["grad"]),
            "grad_min_image_cosine": min(per_image),
            "loss_rel_error": {n: abs(float(a - b)) / abs(float(b)) for n, a, b in zip(names, low["losses"],
                                                                                     ref["losses"], strict=True)},
            "weight_rel_error": {n: abs(float(a - b)) / abs(float(b)) for n, a, b in zip(names, low["weights"],
                                                                                       ref["weights"], strict=True)},
            "fp32_losses": dict(zip(names, ref["losses"].tolist(), strict=True)),
            "fp32_weights": dict(zip(names, ref["weights"].tolist(), strict=True)),
        }  # fmt: skip

    # ---------------------------------------------------------------------- pieces outside the models' passes

    def outside_seconds(self, repeats: int) -> dict[str, float]:
        """Each piece outside the models' own passes, timed alone at the step's shapes (best of ``repeats``).

        - augmentation: DSA + cutmix of the real and the synthetic batch, and the backward pass to the images;
        - formation: decoding the packed images, and its backward pass;
        - decomposition + distillation: on the step's feature shapes (taken once, detached), forward, the
          first-order gradient with respect to the features (with its graph) and a backward pass through it, as
          the matched distillation term differentiates it twice;
        - balancer: ``balancer.backward`` on losses that cost nothing, minus a plain ``backward`` of the same;
        - normalisation: ``normalize_image_gradients`` on the image gradient.
        """
        cfg, nets, device = self.cfg, self.nets, self.device
        syn_x, syn_y = self.syn_batch()
        result: dict[str, float] = {}

        def augmentation() -> None:
            syn = self.syn.detach().requires_grad_(True)
            x = decode_formation(syn, cfg.factor).detach().requires_grad_(True)
            augment_pair(cfg, self.augment, self.real_x, self.real_y, 7, salt=1)
            xs, _ = augment_pair(cfg, self.augment, x, syn_y, 7, salt=2)
            xs.sum().backward()

        def formation() -> None:
            syn = self.syn.detach().requires_grad_(True)
            decode_formation(syn, cfg.factor).sum().backward()

        with torch.no_grad():
            feats_r = [a(self.real_x).features for a in nets.adapters]
            feats_s = [a(syn_x).features for a in nets.adapters]

        def decomposition() -> None:
            if nets.decomposer is None:
                return
            total = torch.zeros((), device=device)
            for feats in (feats_r, feats_s):
                leaves = [
                    [
                        FeatureMap(
                            f.semantic.detach().clone().requires_grad_(True),
                            f.spatial.detach().clone().requires_grad_(True),
                        )
                        for f in model
                    ]
                    for model in feats
                ]
                md = self.distill(nets.decomposer(leaves))
                flat = [t for model in leaves for f in model for t in (f.semantic, f.spatial)]
                grads = torch.autograd.grad(md, flat, create_graph=True, allow_unused=True)
                total = total + sum(g.square().sum() for g in grads if g is not None)
            total.backward()

        names = nets.loss_names
        scales = [10.0**k for k in range(len(names))]

        def balancer() -> None:
            syn = self.syn.detach().requires_grad_(True)
            assert self.balancer is not None
            self.balancer.backward([s * syn.sum() for s in scales], syn, group=0)

        def plain() -> None:
            syn = self.syn.detach().requires_grad_(True)
            sum(s * syn.sum() for s in scales).backward()

        grad = torch.randn_like(self.syn)

        def normalisation() -> None:
            normalize_image_gradients(grad)

        for name, fn in (
            ("augmentation", augmentation),
            ("formation", formation),
            ("decomposition + distillation", decomposition),
            ("normalisation", normalisation),
        ):
            result[name] = min(timed(fn, device, repeats))
        result["balancer"] = max(0.0, min(timed(balancer, device, repeats)) - min(timed(plain, device, repeats)))
        return result


def measure(
    bench: Bench,
    peaks: dict[str, float],
    repeats: int,
    log: Callable[[str], None],
    *,
    precisions: tuple[str, ...] = ("fp32",),
    kinds: tuple[str, ...] = ("plain", "sampling"),
    naive: bool = True,
    breakdown: bool = True,
    measure_memory: bool = True,
) -> dict[str, Any]:
    """Every figure of one shape; ``peaks`` holds the matmul peak of each precision (FLOP/s)."""
    device = bench.device
    figures: dict[str, Any] = {"shape": bench.name, **SHAPES[bench.name], "precisions": list(precisions)}
    for precision in precisions:  # first, as it also warms every precision up
        if precision != "fp32":
            log(f"[{bench.name}] fidelity of {precision} against fp32 (one sampling step each)")
            figures[f"fidelity_{precision}"] = fid = bench.fidelity(precision)
            log(f"[{bench.name}] {precision}: image-gradient cosine {fid['grad_cosine']:.5f}, relative error "
                f"{fid['grad_rel_error']:.2e}")  # fmt: skip
    variants = [("ours", bench.ours)] + ([("naive", bench.naive)] if naive else [])
    warmed: set[tuple[str, str]] = set()
    for variant, step in variants:
        for kind in kinds:
            sample = kind == "sampling"
            run = lambda step=step, sample=sample: step(sample)  # noqa: E731
            log(f"[{bench.name}] {variant} {kind}: counting FLOPs (fp32)")
            bench.nets.precision = "fp32"
            flops = count_flops(run)
            times: dict[str, list[float]] = {p: [] for p in precisions}
            for precision in precisions:
                if (variant, precision) not in warmed and (len(precisions) == 1 or variant != "ours"):
                    bench.nets.precision = precision
                    run()  # warm-up (with several precisions, ours was warmed by the fidelity steps)
                warmed.add((variant, precision))
            log(f"[{bench.name}] {variant} {kind}: timing {repeats} steps per precision, interleaved")
            for _ in range(repeats):
                for precision in precisions:
                    bench.nets.precision = precision
                    times[precision].extend(timed(run, device, 1, warm_up=False))
            for precision in precisions:
                bench.nets.precision = precision
                memory = peak_memory(run, device) if measure_memory else float("nan")
                best, key = (
                    min(times[precision]),
                    f"{variant}_{kind}" + ("" if precision == "fp32" else f"_{precision}"),
                )
                figures[key] = {
                    "precision": precision,
                    "gflop": flops / 1e9,
                    "best_s": best,
                    "median_s": statistics.median(times[precision]),
                    "times_s": times[precision],
                    "gflops_per_s": flops / best / 1e9,
                    "share_of_peak": flops / best / peaks[precision],
                    "peak_memory_mib": memory / 2**20,
                }
                log(
                    f"[{bench.name}] {key}: {flops / 1e9:.1f} GFLOP, best {best:.3f} s, "
                    f"{flops / best / 1e9:.1f} GFLOP/s ({100 * flops / best / peaks[precision]:.0f}% of the "
                    f"{precision} peak), peak memory {memory / 2**20:.0f} MiB"
                )
            bench.nets.precision = "fp32"
    for precision in precisions[1:] if precisions[0] == "fp32" else precisions:
        for kind in kinds:
            if precision != "fp32" and f"ours_{kind}" in figures:
                figures[f"{precision}_over_fp32_{kind}"] = {
                    "best": figures[f"ours_{kind}_{precision}"]["best_s"] / figures[f"ours_{kind}"]["best_s"],
                    "median": figures[f"ours_{kind}_{precision}"]["median_s"] / figures[f"ours_{kind}"]["median_s"],
                }
    if breakdown and "ours_plain" in figures:
        log(f"[{bench.name}] counting the plain step's FLOPs phase by phase")
        figures["phases_gflop"] = bench.phase_flops()
        log(f"[{bench.name}] timing the pieces outside the models' passes")
        outside = bench.outside_seconds(repeats)
        figures["outside_s"] = outside
        figures["outside_share"] = sum(outside.values()) / figures["ours_plain"]["best_s"]
    if "ours_plain" in figures and "ours_sampling" in figures:
        figures["sampling_over_plain"] = figures["ours_sampling"]["best_s"] / figures["ours_plain"]["best_s"]
    if naive and "naive_plain" in figures and "naive_sampling" in figures:
        figures["naive_sampling_over_plain"] = figures["naive_sampling"]["best_s"] / figures["naive_plain"]["best_s"]
    return figures


def report(peaks: dict[str, float], results: list[dict[str, Any]], device: torch.device) -> str:
    lines = [f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}"]
    lines += [f"{p} matmul peak (2048 x 2048): {peak / 1e9:.1f} GFLOP/s" for p, peak in peaks.items()]
    for r in results:
        lines.append("")
        lines.append(f"## {r['shape']}: " + ", ".join(f"{k}={r[k]}" for k in SHAPES[r["shape"]]))
        lines.append("| step | precision | GFLOP | best s | median s | GFLOP/s | share of its peak | peak memory MiB |")
        lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for key, f in r.items():
            if isinstance(f, dict) and "best_s" in f:
                name = " ".join(key.split("_")[:2])
                lines.append(
                    f"| {name} | {f['precision']} | {f['gflop']:.1f} | {f['best_s']:.3f} | {f['median_s']:.3f} | "
                    f"{f['gflops_per_s']:.1f} | {100 * f['share_of_peak']:.0f}% | {f['peak_memory_mib']:.0f} |"
                )
        for key, ratio in r.items():
            if key.endswith(("_over_fp32_plain", "_over_fp32_sampling")):
                lines.append(f"{key.replace('_', ' ')}: {ratio['best']:.2f}x by best, {ratio['median']:.2f}x by median")
        for p in r["precisions"]:
            fid = r.get(f"fidelity_{p}")
            if fid is None:
                continue
            lines.append(
                f"fidelity of {p} against fp32 (one sampling step): image gradient cosine {fid['grad_cosine']:.5f} "
                f"(lowest per stored image {fid['grad_min_image_cosine']:.5f}), relative error "
                f"{fid['grad_rel_error']:.2e}"
            )
            for what in ("loss", "weight"):
                parts = ", ".join(f"{n} {v:.2e}" for n, v in fid[f"{what}_rel_error"].items())
                lines.append(f"  relative error of each {what}: {parts}")
            if fid["grad_cosine"] < 0.99:
                lines.append(f"  {p} FAILS the arithmetic test (image-gradient cosine below 0.99)")
        if "sampling_over_plain" in r:
            naive = r.get("naive_sampling_over_plain")
            lines.append(
                f"sampling / plain: ours {r['sampling_over_plain']:.2f}x"
                + (f", naive {naive:.2f}x" if naive is not None else "")
            )
        if "phases_gflop" in r:
            phases = ", ".join(f"{k} {v:.1f}" for k, v in r["phases_gflop"].items())
            lines.append(f"plain step by phase (GFLOP): {phases}; sum {sum(r['phases_gflop'].values()):.1f}")
            parts = ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in r["outside_s"].items())
            lines.append(f"outside the models' passes: {100 * r['outside_share']:.1f}% of the plain step ({parts})")
        if r["shape"] == "paper" and "ours_plain" in r:
            ref, peak = REFERENCE["paper_plain_gflop"], next(iter(peaks.values()))
            lines.append(
                f"FLOPs vs the reference's plain class-step ({ref} GFLOP): {r['ours_plain']['gflop'] / ref:.2f}x; "
                f"compute limit at the measured {next(iter(peaks))} peak: {r['ours_plain']['gflop'] * 1e9 / peak:.2f} s"
            )
    return "\n".join(lines)


def split_list(parser: argparse.ArgumentParser, flag: str, text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in items if s not in allowed]
    if unknown or not items:
        parser.error(f"{flag} must name some of {list(allowed)}, got {text!r}")
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="paper,cpu", help="comma-separated: paper, cpu, tiny (default: paper,cpu)")
    parser.add_argument("--precision", default="fp32", help="comma-separated: fp32, bf16, tf32 (CUDA); default fp32")
    parser.add_argument("--kinds", default="plain,sampling", help="plain, sampling (default: both), none")
    parser.add_argument("--naive", action=argparse.BooleanOptionalAction, default=True, help="the naive baseline")
    parser.add_argument(
        "--breakdown", action=argparse.BooleanOptionalAction, default=True, help="phase FLOPs and outside pieces"
    )
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True, help="peak memory (a step)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after the warm-up (default: 3)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda:0'")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    shapes = split_list(parser, "--shapes", args.shapes, tuple(SHAPES))
    kinds = () if args.kinds == "none" else split_list(parser, "--kinds", args.kinds, ("plain", "sampling"))
    precisions = split_list(parser, "--precision", args.precision, PRECISIONS)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if "tf32" in precisions and device.type != "cuda":
        parser.error(f"--precision tf32 needs a CUDA device, got {device.type!r} (use fp32 or bf16)")
    if precisions[0] != "fp32" and len(precisions) > 1:
        precisions = ("fp32", *(p for p in precisions if p != "fp32"))  # fidelity and ratios are against fp32

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    peaks = {p: matmul_peak(device, precision=p) for p in precisions}
    log("matmul peak: " + ", ".join(f"{p} {peak / 1e9:.1f} GFLOP/s" for p, peak in peaks.items()))
    options = dict(precisions=precisions, kinds=kinds, naive=args.naive, breakdown=args.breakdown,
                   measure_memory=args.memory)  # fmt: skip
    results = [measure(Bench.build(name, device), peaks, args.repeats, log, **options) for name in shapes]
    text = report(peaks, results, device)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        payload = {"peak_flops": peaks[precisions[0]], "peaks_flops": peaks, "results": results}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
