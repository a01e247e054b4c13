"""HMDC on CIFAR-10: condense a training set with two heterogeneous models, from the public modules only.

    python examples/hmdc_cifar10.py                   # cpu preset: IPC 1, ConvNet-3 + ViT-Tiny at 32x32
    python examples/hmdc_cifar10.py --preset paper    # the paper's settings (GPU; ViT-Tiny at 224)
    python examples/hmdc_cifar10.py --resume          # continue the run in --out from its last checkpoint
    torchrun --nproc-per-node 2 examples/hmdc_cifar10.py  # classes split over 2 processes (gloo on CPU, nccl on GPU)

One file in sections, top to bottom:
  1. configuration  (a frozen dataclass, presets, argparse)
  2. data           (CIFAR-10 decoded once, normalised, grouped by class)
  3. networks       (models + adapters, decomposer, matcher; re-created every outer iteration)
  4. the image objective of one class  (gradient matching through each model + matched distillation)
  5. one outer iteration: image updates, model training, projection training
  6. run folder: checkpoints, metrics, figures
  7. main

Under torchrun each process (rank) computes the image objective of its own classes (class k belongs to rank
k mod world size) and owns their balancer statistics; the image gradients are summed over ranks, so every rank
takes the same image step. Models and projections get the same seeded updates on every rank. Rank 0 writes the run
folder; a checkpoint holds the whole state and resumes on any number of processes.

The method is described in docs (Concepts) and in the method reference; section numbers in comments (§) point
there. Gradient matching differentiates through gradients, which torch.compile cannot trace: all of it runs eager.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from hmdc_modules import (
    GradientBalancer,
    HeterogeneousGradientMatcher,
    MutualDistillationLoss,
    SpatialSemanticDecomposer,
    auto_adapter,
    normalize_image_gradients,
    soft_cross_entropy,
)
from hmdc_modules.condensation import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DifferentiableAugment,
    create_model,
    cutmix,
    decode_formation,
    encode_formation,
    load_checkpoint,
    load_cifar10,
    normalize,
    plot_balancer_history,
    plot_metrics,
    save_checkpoint,
    save_image_grid,
    save_synthetic_set,
    select_representatives,
)
from hmdc_modules.distributed import (
    DistributedContext,
    all_gather_objects,
    all_reduce_sum_,
    any_rank,
    broadcast_module_,
    broadcast_object,
    init_distributed,
    shutdown_distributed,
    sync_balancer_,
)

# ----------------------------------------------------------------------------------------------------------------
# 1. Configuration
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Every setting of a run. ``--preset`` fills them; any flag overrides the preset."""

    preset: str = "cpu"
    # where things are
    data_root: str = "data/cifar10"
    download: bool = False
    out: str = "runs/hmdc_cifar10"
    resume: bool = False
    device: str = "auto"
    seed: int = 0
    deterministic: bool = True
    quiet: bool = False
    # which real data
    classes: str = ""  # comma-separated class indices; empty: all ten
    real_per_class: int = 200  # real images kept per class (0: all 5,000)
    # models (§6)
    model_a: str = "convnet"
    model_b: str = "vit_tiny_patch16_224"
    image_size_a: int = 32
    image_size_b: int = 32
    patch_size_b: int = 4
    weights_a: str = ""
    weights_b: str = ""
    lr_model_a: float = 0.01
    lr_model_b: float = 0.001
    # the synthetic set (§5.3)
    ipc: int = 1
    factor: int = 2
    init: str = "kmeans"
    lr_img: float = 5e-3
    momentum_img: float = 0.5
    # schedule (§5.1)
    iterations: int = 3
    inner_steps: int = 8
    model_steps: int = 3
    projection_steps: int = 3
    batch_real: int = 16
    batch_train: int = 64
    select_every: int = 10
    real_selection: str = "kmeans"
    balance_interval: int = 10
    lr_projection: float = 1e-2
    distance: str = "sse"
    # ablations and switches
    single_model: bool = False
    no_balancer: bool = False
    no_distillation: bool = False
    no_augment: bool = False
    no_cutmix: bool = False
    no_grad_norm: bool = False


PRESETS: dict[str, dict[str, Any]] = {
    # 13 min 40 s measured on a 2-core CPU: IPC 1, ViT-Tiny at its native 32x32 with patch 4, reduced steps.
    "cpu": {},
    # the method reference's full settings (§5.1): a GPU job.
    "paper": dict(
        ipc=10,
        iterations=100,
        inner_steps=100,
        model_steps=17,
        projection_steps=17,
        batch_real=128,
        batch_train=128,
        image_size_b=224,
        patch_size_b=16,
        real_per_class=0,
    ),
}
CHOICES = {
    "preset": sorted(PRESETS),
    "ipc": [1, 10, 50],
    "init": ["random", "real", "kmeans"],
    "real_selection": ["kmeans", "random"],
    "distance": ["sse", "dc", "mse", "cosine"],
}


def parse_config(argv: list[str] | None = None) -> Config:
    """Map the dataclass to argparse: ``--preset`` is read first, its values become the defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=Config.preset, choices=CHOICES["preset"])
    preset = pre.parse_known_args(argv)[0].preset
    defaults = dataclasses.replace(Config(), preset=preset, **PRESETS[preset])

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(Config):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if isinstance(default, bool) and field.name.startswith("no_"):  # --no-balancer, and --balancer to undo
            parser.add_argument(flag, dest=field.name, action="store_true", default=default)
            parser.add_argument("--" + flag[5:], dest=field.name, action="store_false", help=argparse.SUPPRESS)
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default, choices=CHOICES.get(field.name))
    args = parser.parse_args(argv)
    cfg = Config(**vars(args))
    if cfg.single_model and cfg.model_b and not cfg.no_distillation:
        cfg = dataclasses.replace(cfg, no_distillation=True)  # distillation needs two models
    for name in ("iterations", "inner_steps", "batch_real", "batch_train", "factor", "select_every"):
        if getattr(cfg, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    for name in ("model_steps", "projection_steps", "real_per_class"):
        if getattr(cfg, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    if 32 % cfg.factor:
        parser.error(f"--factor must divide the image side 32, got {cfg.factor}")
    return cfg


def derived_seed(cfg: Config, *counters: int) -> int:
    """A seed for one (iteration, step, class, purpose): every random draw is a function of the counters."""
    value = cfg.seed
    for c in counters:
        value = (value * 1_000_003 + c + 1) % (2**62)
    return value


def generator(cfg: Config, *counters: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(cfg, *counters))


# ----------------------------------------------------------------------------------------------------------------
# 2. Data
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class RealData:
    images: Tensor  # [N, 3, 32, 32], normalised, on the device
    labels: Tensor  # [N]
    by_class: list[Tensor]  # indices of each selected class
    classes: list[int]  # CIFAR-10 indices of the selected classes


def load_real_data(cfg: Config, device: torch.device) -> RealData:
    classes = [int(c) for c in cfg.classes.split(",")] if cfg.classes else list(range(10))
    images, labels = load_cifar10(
        cfg.data_root,
        "train",
        download=cfg.download,
        progress=not cfg.quiet,
        classes=classes,
        per_class=cfg.real_per_class or None,
    )
    x = normalize(images, CIFAR10_MEAN, CIFAR10_STD).to(device)
    y = labels.to(device)
    by_class = [torch.nonzero(y == c).flatten() for c in classes]
    for c, idx in zip(classes, by_class, strict=True):
        if idx.numel() == 0:
            raise SystemExit(f"error: class {c} has no training images under {cfg.data_root!r}")
    return RealData(x, y, by_class, classes)


# ----------------------------------------------------------------------------------------------------------------
# 3. Networks: two classifiers behind adapters, the decomposer (SSD), the distillation loss (MD) and the matcher
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Networks:
    models: list[nn.Module]
    adapters: nn.ModuleList
    matcher: HeterogeneousGradientMatcher
    decomposer: SpatialSemanticDecomposer | None
    model_optimizers: list[torch.optim.Optimizer]
    projection_optimizer: torch.optim.Optimizer | None


def build_networks(cfg: Config, device: torch.device, iteration: int) -> Networks:
    """Fresh networks for an outer iteration: the reference re-initialises all of them every iteration (§5.1)."""
    torch.manual_seed(derived_seed(cfg, iteration, 0x5EED))
    specs = [(cfg.model_a, cfg.image_size_a, None, cfg.weights_a, cfg.lr_model_a)]
    if not cfg.single_model:
        specs.append((cfg.model_b, cfg.image_size_b, cfg.patch_size_b, cfg.weights_b, cfg.lr_model_b))
    models, adapters, optimizers = [], [], []
    for name, size, patch, weights, lr in specs:
        is_vit = name != "convnet" and "vit" in name
        model = create_model(
            name, 10, image_size=size, patch_size=patch if is_vit else None, weights=weights or None
        ).to(device)
        models.append(model)
        adapters.append(auto_adapter(model, input_size=size if size != 32 else None))
        optimizers.append(torch.optim.SGD(model.parameters(), lr=lr))
    adapters = nn.ModuleList(adapters)
    matcher = HeterogeneousGradientMatcher(list(adapters), distance=cfg.distance)
    decomposer, projection_optimizer = None, None
    if not cfg.no_distillation and len(models) > 1:
        decomposer = SpatialSemanticDecomposer(list(adapters), image_size=32).to(device)
        projection_optimizer = torch.optim.Adam(decomposer.parameters(), lr=cfg.lr_projection)
    return Networks(models, adapters, matcher, decomposer, optimizers, projection_optimizer)


def loss_names(cfg: Config) -> list[str]:
    names = ["gm_a"] if cfg.single_model else ["gm_a", "gm_b"]
    return names if (cfg.no_distillation or cfg.single_model) else [*names, "md"]


# ----------------------------------------------------------------------------------------------------------------
# 4. The image objective of one class (§2, §4.1)
# ----------------------------------------------------------------------------------------------------------------


def augment_pair(cfg: Config, augment: DifferentiableAugment, x: Tensor, y: Tensor, seed: int, salt: int):
    """Shared-seed augmentation (same transform for the real and the synthetic batch), then cutmix."""
    if not cfg.no_augment:
        x = augment(x, seed=seed)
    if cfg.no_cutmix:
        return x, nn.functional.one_hot(y, 10).to(x.dtype)
    return cutmix(x, y, 10, p=0.5, generator=torch.Generator().manual_seed(seed + salt))


def class_losses(
    cfg: Config,
    nets: Networks,
    augment: DifferentiableAugment,
    distill: MutualDistillationLoss,
    real_x: Tensor,
    real_y: Tensor,
    syn_x: Tensor,
    syn_y: Tensor,
    seed: int,
) -> list[Tensor]:
    """The unweighted image losses of one class: one gradient-matching loss per model, plus the matched MD."""
    xr, tr = augment_pair(cfg, augment, real_x, real_y, seed, salt=1)
    xs, ts = augment_pair(cfg, augment, syn_x, syn_y, seed, salt=2)
    # One forward pass of each batch per model serves both the cross-entropy and the distillation objective.
    out_r = [adapter(xr) for adapter in nets.adapters]
    out_s = [adapter(xs) for adapter in nets.adapters]
    ce_r = [soft_cross_entropy(o.logits, tr) for o in out_r]
    ce_s = [soft_cross_entropy(o.logits, ts) for o in out_s]
    losses = list(nets.matcher.match(ce_r, ce_s).unbind())
    if nets.decomposer is not None:
        md_r = distill(nets.decomposer([o.features for o in out_r]))
        md_s = distill(nets.decomposer([o.features for o in out_s]))
        losses.append(nets.matcher.match([md_r], [md_s], [nets.matcher.all_parameters()])[0])
    return losses


# ----------------------------------------------------------------------------------------------------------------
# 5. One outer iteration
# ----------------------------------------------------------------------------------------------------------------


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or infinite; the run stops without touching the last checkpoint."""


def select_real_batches(
    cfg: Config, nets: Networks, real: RealData, it: int, step: int, owned: list[int]
) -> dict[int, Tensor]:
    """Per owned class, the indices of the real batch: k-means representatives (§5.5) or a random sample."""
    batches = {}
    model_index = (step // cfg.select_every) % len(nets.adapters)  # alternate models in blocks (§5.5)
    adapter = nets.adapters[model_index]
    for k in owned:
        idx = real.by_class[k]
        g = generator(cfg, it, step, k, 0x5E1)
        if cfg.real_selection == "random" or idx.numel() <= cfg.batch_real:
            pick = torch.randperm(idx.numel(), generator=g)[: cfg.batch_real]
        else:
            emb = embed_images(adapter, real.images[idx])
            pick = select_representatives(emb.cpu(), cfg.batch_real, generator=g)
        batches[k] = idx[pick.to(idx.device)]
    return batches


@torch.no_grad()
def embed_images(adapter: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """The deepest tapped layer's semantic vector (CNN: global mean; ViT: CLS), in eval mode."""
    was_training = adapter.training
    adapter.eval()
    out = torch.cat(
        [adapter(images[i : i + batch_size]).features[-1].semantic for i in range(0, len(images), batch_size)]
    )
    adapter.train(was_training)
    return out


def image_update(
    cfg: Config,
    state: RunState,
    nets: Networks,
    real: RealData,
    batches: dict[int, Tensor],
    augment: DifferentiableAugment,
    distill: MutualDistillationLoss,
    ctx: DistributedContext,
) -> dict[str, float]:
    """One update of the synthetic images: every class's balanced objective, gradient normalisation, step.

    Each rank computes its own classes; their image gradients touch disjoint slices, so the sum over ranks is
    exactly the single-process gradient, and every rank then takes the same step.
    """
    syn = state.synthetic
    state.image_optimizer.zero_grad(set_to_none=True)
    names = loss_names(cfg)
    totals = {n: 0.0 for n in names} | {f"w_{n}": 0.0 for n in names}
    failure: str | None = None
    for k in ctx.owned(len(real.classes)):
        c = real.classes[k]
        seed = derived_seed(cfg, state.iteration, state.step, k, 0xA06)
        syn_x = decode_formation(syn[k], cfg.factor)
        syn_y = torch.full((syn_x.shape[0],), c, dtype=torch.long, device=syn.device)
        losses = class_losses(
            cfg, nets, augment, distill, real.images[batches[k]], real.labels[batches[k]], syn_x, syn_y, seed
        )
        bad = [(name, loss.item()) for name, loss in zip(names, losses, strict=True) if not torch.isfinite(loss)]
        if bad:
            failure = (
                f"loss {bad[0][0]!r} is {bad[0][1]} at outer iteration {state.iteration}, step {state.step} (class {c})"
            )
            break
        if state.balancer is not None:  # weighted backward; on sampling calls it reuses the per-loss gradients
            state.balancer.backward(losses, syn, group=k)
            weights = state.balancer.weights(k).tolist()
        else:
            torch.stack(losses).sum().backward()
            weights = [1.0] * len(losses)
        for name, loss, w in zip(names, losses, weights, strict=True):
            totals[name] += loss.item() / len(real.classes)
            totals[f"w_{name}"] += w / len(real.classes)
    if any_rank(failure is not None, ctx):  # every rank stops together, with the first failing rank's message
        raise NonFiniteLoss(next(m for m in all_gather_objects(failure, ctx) if m is not None))
    if syn.grad is None:  # a rank without classes (more ranks than classes) contributes zeros
        syn.grad = torch.zeros_like(syn)
    all_reduce_sum_(syn.grad, ctx)
    summed = all_reduce_sum_(torch.tensor(list(totals.values()), dtype=torch.float64, device=syn.device), ctx)
    totals = dict(zip(totals, summed.tolist(), strict=True))
    grad = syn.grad
    if grad is None or not torch.isfinite(grad).all():
        raise NonFiniteLoss(f"the image gradient is not finite at outer iteration {state.iteration}, step {state.step}")
    if not cfg.no_grad_norm:
        grad.copy_(normalize_image_gradients(grad))  # §1.4: per image, per channel, L-infinity
    state.image_optimizer.step()
    with torch.no_grad():  # keep pixels in [0, 1] (clamp in de-normalised space)
        mean = torch.tensor(CIFAR10_MEAN, device=syn.device).view(1, 1, 3, 1, 1)
        std = torch.tensor(CIFAR10_STD, device=syn.device).view(1, 1, 3, 1, 1)
        syn.copy_(((syn * std + mean).clamp(0, 1) - mean) / std)
    return totals


def train_networks(
    cfg: Config,
    state: RunState,
    nets: Networks,
    real: RealData,
    augment: DifferentiableAugment,
    distill: MutualDistillationLoss,
) -> dict[str, float]:
    """§4.2 model training (CE of each model + D_MD) and §4.3 projection training (D_MD on frozen features)."""
    g = generator(cfg, state.iteration, state.step, 0x7A1)
    all_idx = torch.cat(real.by_class)
    model_loss = projection_loss = 0.0
    for _n in range(cfg.model_steps):
        idx = all_idx[torch.randint(len(all_idx), (cfg.batch_train,), generator=g).to(all_idx.device)]
        x, y = real.images[idx], real.labels[idx]
        if not cfg.no_augment:
            x = augment(x, generator=g)
        x, t = cutmix(x, y, 10, p=0.0 if cfg.no_cutmix else 0.5, generator=g)
        outs = [adapter(x) for adapter in nets.adapters]
        loss = sum(soft_cross_entropy(o.logits, t) for o in outs)
        if nets.decomposer is not None:
            loss = loss + distill(nets.decomposer([o.features for o in outs]))
        if not torch.isfinite(loss):
            raise NonFiniteLoss(
                f"model-training loss is {loss.item()} at iteration {state.iteration}, step {state.step}"
            )
        for opt in nets.model_optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in nets.model_optimizers:
            opt.step()
        model_loss += loss.item() / cfg.model_steps
    if nets.decomposer is not None and nets.projection_optimizer is not None:
        for _n in range(cfg.projection_steps):
            idx = all_idx[torch.randint(len(all_idx), (cfg.batch_train,), generator=g).to(all_idx.device)]
            with torch.no_grad():
                feats = [adapter(real.images[idx]).features for adapter in nets.adapters]
            loss = distill(nets.decomposer(feats))
            nets.projection_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nets.projection_optimizer.step()
            projection_loss += loss.item() / cfg.projection_steps
    return {"model_loss": model_loss, "projection_loss": projection_loss}


def synchronise_networks(nets: Networks, ctx: DistributedContext) -> None:
    """Same seeded updates keep replicas identical on a deterministic CPU; a GPU may drift: rank 0's values win."""
    if ctx.enabled and ctx.device.type != "cpu":
        broadcast_module_(nets.adapters, ctx)
        if nets.decomposer is not None:
            broadcast_module_(nets.decomposer, ctx)


# ----------------------------------------------------------------------------------------------------------------
# 6. Run state, the run folder, checkpoints
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class RunState:
    synthetic: Tensor  # [classes, ipc, 3, 32, 32], normalised, packed (factor x factor tiles), a leaf
    image_optimizer: torch.optim.Optimizer
    balancer: GradientBalancer | None
    iteration: int = 0  # outer iteration in progress
    step: int = 0  # inner step in progress within it
    networks: dict[str, Any] | None = None  # state of the networks when stopped mid-iteration

    def global_step(self, cfg: Config) -> int:
        return self.iteration * cfg.inner_steps + self.step


def initial_images(cfg: Config, real: RealData, device: torch.device) -> Tensor:
    """§5.3: Gaussian noise, random real images, or k-means-chosen real images, multi-formation encoded."""
    n = cfg.factor**2 * cfg.ipc
    per_class = []
    for k, idx in enumerate(real.by_class):
        g = generator(cfg, 0xC0DE, k)
        if cfg.init == "random":
            per_class.append(torch.randn(cfg.ipc, 3, 32, 32, generator=g).to(device))
            continue
        if cfg.init == "real" or idx.numel() <= n:
            pick = (
                idx[torch.randint(idx.numel(), (n,), generator=g).to(idx.device)]
                if idx.numel() < n
                else (idx[torch.randperm(idx.numel(), generator=g)[:n].to(idx.device)])
            )
        else:
            torch.manual_seed(derived_seed(cfg, 0xC0DE, k, 1))
            embedder = auto_adapter(create_model(cfg.model_a, 10, image_size=cfg.image_size_a).to(device))
            emb = embed_images(embedder, real.images[idx]).cpu()
            pick = idx[select_representatives(emb, n, unique=True, generator=g).to(idx.device)]
        per_class.append(encode_formation(real.images[pick], cfg.factor))
    return torch.stack(per_class)


def new_state(cfg: Config, real: RealData, device: torch.device) -> RunState:
    syn = initial_images(cfg, real, device).requires_grad_(True)
    optimizer = torch.optim.SGD([syn], lr=cfg.lr_img, momentum=cfg.momentum_img)
    names = loss_names(cfg)
    balancer = None
    if not cfg.no_balancer and len(names) > 1:
        balancer = GradientBalancer(
            len(names), num_groups=len(real.classes), interval=cfg.balance_interval, loss_names=names
        ).to(device)
    return RunState(syn, optimizer, balancer)


def checkpoint_payload(
    cfg: Config, state: RunState, nets: Networks | None, batches: list[Tensor] | None = None
) -> dict[str, Any]:
    payload = {
        "config": dataclasses.asdict(cfg),
        "synthetic": state.synthetic.detach().cpu(),
        "image_optimizer": state.image_optimizer.state_dict(),
        "balancer": state.balancer.state_dict() if state.balancer is not None else None,
        "iteration": state.iteration,
        "step": state.step,
        "networks": None,
    }
    if nets is not None and state.step > 0:  # stopped mid-iteration: keep the trained networks too
        payload["networks"] = {
            "adapters": nets.adapters.state_dict(),
            "decomposer": nets.decomposer.state_dict() if nets.decomposer is not None else None,
            "projection_optimizer": nets.projection_optimizer.state_dict() if nets.projection_optimizer else None,
            "batches": [b.cpu() for b in batches or []],
        }
    return payload


def restore_state(cfg: Config, real: RealData, device: torch.device, payload: dict[str, Any]) -> RunState:
    state = new_state(cfg, real, device)
    with torch.no_grad():
        state.synthetic.copy_(payload["synthetic"].to(device))
    state.image_optimizer.load_state_dict(payload["image_optimizer"])
    if state.balancer is not None and payload["balancer"] is not None:
        state.balancer.load_state_dict(payload["balancer"])
    state.iteration, state.step, state.networks = payload["iteration"], payload["step"], payload["networks"]
    return state


def restore_networks(
    nets: Networks, saved: dict[str, Any], device: torch.device, owned: list[int]
) -> dict[int, Tensor]:
    """Networks (and this rank's current real batches) of a run stopped mid-iteration."""
    nets.adapters.load_state_dict(saved["adapters"])
    if nets.decomposer is not None and nets.projection_optimizer is not None:
        nets.decomposer.load_state_dict(saved["decomposer"])
        nets.projection_optimizer.load_state_dict(saved["projection_optimizer"])
    return {k: saved["batches"][k].to(device) for k in owned}


def gather_batches(batches: dict[int, Tensor], ctx: DistributedContext) -> list[Tensor]:
    """Every class's current real batch, from the ranks that own them (for a mid-iteration checkpoint)."""
    merged: dict[int, Tensor] = {}
    for part in all_gather_objects({k: b.cpu() for k, b in batches.items()}, ctx):
        merged.update(part)
    return [merged[k] for k in sorted(merged)]


class RunFolder:
    """Everything a run writes lives in one folder."""

    def __init__(self, cfg: Config) -> None:
        self.root = Path(cfg.out)
        self.checkpoint = self.root / "checkpoint.pt"
        self.metrics = self.root / "metrics.csv"
        self.fields: list[str] | None = None

    def write_config(self, cfg: Config) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")

    def truncate_metrics(self, before: int) -> None:
        """On resume, drop the metric rows of steps the checkpoint does not hold."""
        if not self.metrics.exists():
            return
        with self.metrics.open() as f:
            rows = [r for r in csv.DictReader(f) if int(r["global_step"]) < before]
        self.metrics.unlink()
        for row in rows:
            self.append_metrics(row)

    def append_metrics(self, row: dict[str, Any]) -> None:
        new = not self.metrics.exists()
        with self.metrics.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def save_artefacts(self, cfg: Config, state: RunState, real: RealData, completed_iterations: int) -> None:
        syn = state.synthetic.detach().cpu()
        labels = torch.tensor(real.classes).repeat_interleave(cfg.ipc)
        save_synthetic_set(
            self.root / "synthetic.pt",
            syn.flatten(0, 1),
            labels,
            mean=CIFAR10_MEAN,
            std=CIFAR10_STD,
            factor=cfg.factor,
            ipc=cfg.ipc,
            iteration=completed_iterations,
        )
        save_image_grid(syn, self.root / "grid.png", mean=CIFAR10_MEAN, std=CIFAR10_STD, scale=2)
        if self.metrics.exists() and completed_iterations:
            plot_metrics(
                self.metrics,
                self.root / "losses.png",
                columns=[*loss_names(cfg), "model_loss"],
                title="HMDC losses per image update",
            )
        if state.balancer is not None:
            plot_balancer_history(
                state.balancer.history_arrays(),
                self.root / "balancer.png",
                loss_names=loss_names(cfg),
                title=f"HMDC gradient balancing ({', '.join(real_class_names(real))})",
            )


def real_class_names(real: RealData) -> list[str]:
    from hmdc_modules.condensation import CIFAR10_CLASSES

    return [CIFAR10_CLASSES[c] for c in real.classes] if len(real.classes) <= 3 else [f"{len(real.classes)} classes"]


# ----------------------------------------------------------------------------------------------------------------
# 7. Main
# ----------------------------------------------------------------------------------------------------------------


def read_checkpoint(cfg: Config, folder: RunFolder, ctx: DistributedContext) -> dict[str, Any]:
    """Rank 0 reads the checkpoint and hands it to every rank (only rank 0's machine needs the run folder)."""
    payload: dict[str, Any] | str
    if not ctx.is_main:
        payload = ""
    elif not folder.checkpoint.exists():
        payload = f"error: --resume: no checkpoint at {folder.checkpoint}"
    else:
        payload = load_checkpoint(folder.checkpoint)
    payload = broadcast_object(payload, ctx)
    if isinstance(payload, str):
        raise SystemExit(payload)
    saved = Config(**payload["config"])
    if dataclasses.replace(saved, resume=True, quiet=cfg.quiet, device=cfg.device) != cfg:
        changed = [f.name for f in dataclasses.fields(Config) if getattr(saved, f.name) != getattr(cfg, f.name)]
        changed = [c for c in changed if c not in ("resume", "quiet", "device")]
        raise SystemExit(f"error: --resume with settings that differ from the checkpoint's: {', '.join(changed)}")
    return payload


def run(cfg: Config, ctx: DistributedContext | None = None) -> Path:
    """Condense; under torchrun ``ctx`` is the process group (``None``: join it, or run as one process)."""
    ctx = ctx if ctx is not None else init_distributed(cfg.device)
    device = ctx.device
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    folder = RunFolder(cfg)
    main_rank = ctx.is_main
    real = load_real_data(cfg, device)
    owned = ctx.owned(len(real.classes))
    if cfg.resume:
        state = restore_state(cfg, real, device, read_checkpoint(cfg, folder, ctx))
        if main_rank:
            folder.truncate_metrics(state.global_step(cfg))
    else:
        state = new_state(cfg, real, device)
        if main_rank:
            folder.write_config(cfg)
            folder.metrics.unlink(missing_ok=True)
            folder.save_artefacts(cfg, state, real, completed_iterations=0)
    if state.balancer is not None:
        sync_balancer_(state.balancer, owned, ctx)  # marks the common starting point of the per-rank statistics
    augment = DifferentiableAugment().to(device)
    distill = MutualDistillationLoss()
    names = loss_names(cfg)

    stop = {"requested": False}

    def request_stop(signum: int, frame: Any) -> None:
        if stop["requested"]:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        stop["requested"] = True
        tqdm.write("interrupt: finishing this step, then writing a checkpoint (Ctrl-C again to abort)")

    previous_handler = signal.signal(signal.SIGINT, request_stop)
    total = cfg.iterations * cfg.inner_steps
    bar = tqdm(
        total=total,
        initial=state.iteration * cfg.inner_steps + state.step,
        disable=cfg.quiet or not main_rank,
        desc="image updates" if ctx.world_size == 1 else f"image updates ({ctx.world_size} processes)",
        dynamic_ncols=True,
    )
    nets: Networks | None = None
    try:
        while state.iteration < cfg.iterations:
            nets = build_networks(cfg, device, state.iteration)
            batches: dict[int, Tensor] = {}
            if state.networks is not None:
                batches = restore_networks(nets, state.networks, device, owned)
                state.networks = None
            elif state.balancer is not None:
                state.balancer.reset()
            while state.step < cfg.inner_steps:
                t0 = time.perf_counter()
                if not batches or state.step % cfg.select_every == 0:
                    batches = select_real_batches(cfg, nets, real, state.iteration, state.step, owned)
                t1 = time.perf_counter()
                row: dict[str, Any] = {
                    "iteration": state.iteration,
                    "step": state.step,
                    "global_step": state.global_step(cfg),
                }
                row |= image_update(cfg, state, nets, real, batches, augment, distill, ctx)
                t2 = time.perf_counter()
                row |= train_networks(cfg, state, nets, real, augment, distill)
                synchronise_networks(nets, ctx)
                t3 = time.perf_counter()
                row |= {
                    "seconds": round(t3 - t0, 4),
                    "select_seconds": round(t1 - t0, 4),
                    "image_seconds": round(t2 - t1, 4),
                    "train_seconds": round(t3 - t2, 4),
                }
                state.step += 1
                if main_rank:
                    folder.append_metrics(row)
                    bar.update(1)
                    postfix = {n: f"{row[n]:.3g}" for n in names} | {f"w_{n}": f"{row['w_' + n]:.2f}" for n in names}
                    bar.set_postfix(postfix)
                    if cfg.quiet:
                        print(json.dumps(row), flush=True)
                if any_rank(stop["requested"], ctx):  # all ranks stop after the same step
                    every_batch = gather_batches(batches, ctx)
                    if state.balancer is not None:
                        sync_balancer_(state.balancer, owned, ctx)
                    if main_rank:
                        save_checkpoint(checkpoint_payload(cfg, state, nets, every_batch), folder.checkpoint)
                        tqdm.write(f"stopped; resume with --resume --out {cfg.out}")
                    return folder.root
            state.iteration, state.step = state.iteration + 1, 0
            if state.balancer is not None:
                sync_balancer_(state.balancer, owned, ctx)
            if main_rank:
                # artefacts first: a kill between the two writes leaves the older checkpoint, and resuming redoes the
                # (deterministic) iteration and rewrites the same artefacts
                folder.save_artefacts(cfg, state, real, completed_iterations=state.iteration)
                save_checkpoint(checkpoint_payload(cfg, state, None), folder.checkpoint)
    except NonFiniteLoss as err:
        raise SystemExit(f"error: {err}; stopping. The last checkpoint ({folder.checkpoint}) is intact.") from err
    finally:
        bar.close()
        signal.signal(signal.SIGINT, previous_handler)
    return folder.root


def lost_rank_message(cfg: Config, ctx: DistributedContext, why: str) -> str:
    return (
        f"error: rank {ctx.rank} of {ctx.world_size}: {why}; the job stops. The last checkpoint "
        f"({Path(cfg.out) / 'checkpoint.pt'}) is intact: continue with --resume, on any number of processes."
    )


def on_sigterm(cfg: Config, ctx: DistributedContext) -> Callable[[int, Any], None]:
    def handler(signum: int, frame: Any) -> None:  # torchrun stops the other ranks with SIGTERM when one fails
        raise SystemExit(lost_rank_message(cfg, ctx, "stopped by the launcher (another process of the job ended)"))

    return handler


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    try:
        ctx = init_distributed(cfg.device)
    except ValueError as err:  # a bad --device, or torchrun variables that do not fit together
        print(f"error: {err}", file=sys.stderr)
        return 2
    if ctx.enabled:
        signal.signal(signal.SIGTERM, on_sigterm(cfg, ctx))
    try:
        root = run(cfg, ctx)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except torch.distributed.DistError as err:  # a peer died: its socket closed under a collective
        raise SystemExit(lost_rank_message(cfg, ctx, f"lost contact with another process ({first_line(err)})")) from err
    finally:
        shutdown_distributed(ctx)
    if ctx.is_main:
        print(f"run folder: {root}")
    return 0


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


if __name__ == "__main__":
    sys.exit(main())
