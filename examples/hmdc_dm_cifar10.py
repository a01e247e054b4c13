"""HMDC under distribution matching (DM, Zhao & Bilen 2023) on CIFAR-10, from the library's public parts.

    python examples/hmdc_dm_cifar10.py                        # cpu preset: IPC 10, ConvNet-3 + ViT-Tiny at 32x32
    python examples/hmdc_dm_cifar10.py --single-model         # plain DM through ConvNet-3
    python examples/hmdc_dm_cifar10.py --resume --out DIR     # continue a run from its folder alone

Per class and per model, the DM loss is the distance between the mean embeddings of a real and a synthetic batch
under the same augmentation (HeterogeneousFeatureMatcher). With two models, the decomposer's projections are
trained to align the models on real data (the mutual distillation loss, method doc §4.3), and a third loss matches
the real and synthetic token statistics in that shared space. The balancer weighs the losses on the synthetic
images (§1). Models are drawn afresh every outer iteration, as DM does (or reloaded from --weights-a/-b with a
new head: `_ft`). Every random draw derives from (seed, outer iteration, class): a resumed run is bitwise equal.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from hmdc_modules import GradientBalancer, MutualDistillationLoss, SpatialSemanticDecomposer, auto_adapter
from hmdc_modules import condensation as kit
from hmdc_modules import distributed as ranks
from hmdc_modules.condensation.run_folder import RunFolder, RunFolderError, resume_settings
from hmdc_modules.feature_matching import HeterogeneousFeatureMatcher
from hmdc_modules.functional import normalize_image_gradients


def opt(default: Any, help: str, *, low: float | None = None, choices: Any = None) -> Any:
    return field(default=default, metadata={"help": help, "low": low, "choices": choices})


@dataclass(frozen=True)
class Config:
    """Every setting of a run; ``--preset`` fills them and any flag overrides the preset."""

    preset: str = opt("cpu", "named settings: cpu (about 15 minutes on 2 cores)", choices=["cpu"])
    data_root: str = opt("data/cifar10", "CIFAR-10 folder (cifar-10-batches-py, or train/<class>/*.png)")
    download: bool = opt(False, "download CIFAR-10 into --data-root with torchvision (needs internet)")
    out: str = opt("runs/hmdc_dm_cifar10", "run folder: config, checkpoints, synthetic set, metrics, figures")
    resume: bool = opt(False, "continue the run in --out; its settings come from its checkpoint")
    overwrite: bool = opt(False, "replace the run that --out holds (refused without this or --resume)")
    device: str = opt("auto", "auto (CUDA when available), cpu, cuda, cuda:1, ...")
    seed: int = opt(0, "run seed; every random draw derives from it", low=0)
    quiet: bool = opt(False, "no progress bar")
    classes: str = opt("", "classes to condense, by index or name (e.g. 3,8 or cat,ship); empty: all")
    real_per_class: int = opt(500, "real images kept per class (0: all)", low=0)
    real_subset: str = opt("all", "train images: all, or the C/P half (protocol v2)", choices=["all", "C", "P"])
    model_a: str = opt("convnet", "model A: convnet or a timm name")
    model_b: str = opt("vit_tiny_patch16_224", "model B: a timm name")
    image_size_a: int = opt(32, "input side of model A", low=8)
    image_size_b: int = opt(32, "input side of model B", low=8)
    patch_size_b: int = opt(8, "patch size of a ViT model B (0: the architecture's own)", low=0)
    weights_a: str = opt("", "weights file for model A, reloaded every outer iteration with a new head (_ft)")
    weights_b: str = opt("", "weights file for model B, reloaded every outer iteration with a new head (_ft)")
    ipc: int = opt(10, "synthetic images per class", low=1)
    init: str = opt("real", "initial images", choices=["random", "real"])
    lr_img: float = opt(0.1, "SGD learning rate of the synthetic images (0.1: the DM protocol's curve gains most "
                        "by 50 updates; 0.01: still rising at 200)", low=0)  # fmt: skip
    momentum_img: float = opt(0.5, "SGD momentum of the synthetic images", low=0)
    iterations: int = opt(100, "outer iterations, models drawn afresh at each (0: the start only)", low=0)
    inner_steps: int = opt(1, "image updates per outer iteration (DM: 1)", low=1)
    projection_steps: int = opt(4, "Adam steps aligning the projections on real data after each draw", low=0)
    lr_projection: float = opt(1e-2, "Adam learning rate of the projections and matching matrix", low=0)
    batch_real: int = opt(64, "real images per class and update", low=1)
    distance: str = opt("sse", "distance of the mean embeddings", choices=["sse", "mse", "cosine"])
    checkpoint_every: int = opt(25, "checkpoint and artefacts every this many outer iterations (and at the end)", low=1)
    single_model: bool = opt(False, "arm: model A alone (plain DM)")
    no_balancer: bool = opt(False, "arm: every loss weighs 1")
    no_distillation: bool = opt(False, "arm: no shared-space term (and no projections)")
    no_augment: bool = opt(False, "ablation: no differentiable augmentation")
    no_grad_norm: bool = opt(False, "ablation: no per-image gradient normalisation (§1.4)")

    def settings(self) -> dict[str, Any]:  # what a checkpoint pins (not where things are)
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in LOCATIONS}


PRESETS: dict[str, dict[str, Any]] = {"cpu": {}}
LOCATIONS = ("data_root", "download", "out", "resume", "overwrite", "device", "quiet")
ARTEFACTS = ("synthetic.pt", "grid.png", "losses.png", "balancer.png")


class SettingError(Exception):
    """A setting that cannot work: one ``error:`` line, exit status 2, nothing written."""


def parse_config(argv: list[str] | None = None) -> tuple[Config, set[str]]:
    """The settings, and the names of those given explicitly (a resumed run must agree with them)."""

    def parser_for(defaults: Config | None) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                         add_help=defaults is not None)  # fmt: skip
        for f in dataclasses.fields(Config):
            default = argparse.SUPPRESS if defaults is None else getattr(defaults, f.name)
            flag, helptext = "--" + f.name.replace("_", "-"), f.metadata["help"]
            if f.type == "bool":
                parser.add_argument(flag, action="store_true", default=default, help=helptext)
            else:
                kind = {"int": int, "float": float, "str": str}[str(f.type)]
                parser.add_argument(flag, type=kind, default=default, choices=f.metadata["choices"], help=helptext)
        return parser

    given = vars(parser_for(None).parse_known_args(argv)[0])
    parser = parser_for(dataclasses.replace(Config(), **PRESETS[given.get("preset", "cpu")]))
    cfg = Config(**vars(parser.parse_args(argv)))
    for f in dataclasses.fields(Config):
        low, value = f.metadata["low"], getattr(cfg, f.name)
        if low is not None and not value >= low:  # also refuses nan
            parser.error(f"argument --{f.name.replace('_', '-')}: must be >= {low}, got {value}")
    for name in ("lr_img", "lr_projection"):
        if not getattr(cfg, name) > 0:
            parser.error(f"argument --{name.replace('_', '-')}: must be > 0, got {getattr(cfg, name)}")
    if cfg.momentum_img >= 1:
        parser.error(f"argument --momentum-img: must be < 1, got {cfg.momentum_img}")
    for name in ("weights_a", "weights_b"):
        if getattr(cfg, name) and not Path(getattr(cfg, name)).is_file():
            parser.error(f"argument --{name.replace('_', '-')}: no file at {getattr(cfg, name)!r}")
    if cfg.resume and cfg.overwrite:
        parser.error("--resume and --overwrite exclude each other: continue the run, or replace it")
    return cfg, set(given)


# ------------------------------------------------------------------------------------------------- data, networks
@dataclass
class RealData:
    images: Tensor  # [N, 3, 32, 32], normalised, on the device
    by_class: list[Tensor]  # indices of each condensed class
    classes: list[int]  # the condensed classes
    class_names: list[str]  # every class of the data set


def load_real_data(cfg: Config, device: torch.device) -> RealData:
    try:
        names = list(kit.CIFAR10_CLASSES if cfg.download else kit.dataset_classes(cfg.data_root))
        classes = kit.parse_classes(cfg.classes, names, name="--classes")
        images, labels = kit.load_cifar10(cfg.data_root, "train", download=cfg.download, progress=not cfg.quiet,
                                          classes=classes, per_class=cfg.real_per_class or None,
                                          subset=cfg.real_subset)  # fmt: skip
    except (FileNotFoundError, ValueError) as err:
        raise SettingError(f"--data-root: {err}" if isinstance(err, FileNotFoundError) else str(err)) from None
    x, y = kit.normalize(images, kit.CIFAR10_MEAN, kit.CIFAR10_STD).to(device), labels.to(device)
    return RealData(x, [torch.nonzero(y == c).flatten() for c in classes], classes, names)


def loss_names(cfg: Config) -> tuple[str, ...]:
    if cfg.single_model:
        return ("dm_a",)
    return ("dm_a", "dm_b") if cfg.no_distillation else ("dm_a", "dm_b", "md")


def build_matcher(cfg: Config, num_classes: int, device: torch.device, it: int) -> HeterogeneousFeatureMatcher:
    """Fresh models for an outer iteration (DM draws a new network each time; `_ft` reloads the weights, new
    head), their adapters, and the decomposer whose shared space the distillation term uses."""
    torch.manual_seed(kit.derive_seed(cfg.seed, it, 0x5EED))
    specs = [("a", cfg.model_a, cfg.image_size_a, 0, cfg.weights_a)]
    if not cfg.single_model:
        specs.append(("b", cfg.model_b, cfg.image_size_b, cfg.patch_size_b, cfg.weights_b))
    adapters = []
    for key, name, size, patch, weights in specs:
        try:
            model = kit.create_model(name, num_classes, image_size=size, patch_size=patch or None,
                                     weights=weights or None)  # fmt: skip
        except Exception as err:  # an unknown name, a bad size or file: one line
            raise SettingError(f"--model-{key} {name}: {ranks.first_line(err, 1000)}") from None
        adapters.append(auto_adapter(model.to(device), input_size=size if size != 32 else None))
    for adapter in adapters:
        adapter.requires_grad_(False)  # DM never trains the models: only the images (and projections) learn
    decomposer = None
    if "md" in loss_names(cfg):
        decomposer = SpatialSemanticDecomposer(adapters, image_size=32).to(device)
    return HeterogeneousFeatureMatcher(adapters, cfg.distance, decomposer=decomposer)


def align_projections(cfg: Config, matcher: HeterogeneousFeatureMatcher, real: RealData, it: int) -> float:
    """§4.3: the projections and matching matrix learn to align the frozen models' features on real data."""
    if matcher.decomposer is None or cfg.projection_steps == 0:
        return 0.0
    g, all_idx = torch.Generator().manual_seed(kit.derive_seed(cfg.seed, it, 0x7A1)), torch.cat(real.by_class)
    optimizer = torch.optim.Adam(matcher.decomposer.parameters(), lr=cfg.lr_projection)
    distill, total = MutualDistillationLoss(), 0.0
    for _ in range(cfg.projection_steps):
        idx = all_idx[torch.randint(len(all_idx), (cfg.batch_real,), generator=g).to(all_idx.device)]
        with torch.no_grad():
            features = [adapter(real.images[idx]).features for adapter in matcher.models]
        loss = distill(matcher.decomposer(features))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() / cfg.projection_steps
    return total


# ---------------------------------------------------------------------------------------------------- image update
@dataclass
class RunState:
    synthetic: Tensor  # [classes, ipc, 3, 32, 32], normalised, a leaf
    image_optimizer: torch.optim.Optimizer
    balancer: GradientBalancer | None
    iteration: int = 0  # outer iterations completed
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one row per image update


def initial_images(cfg: Config, real: RealData, device: torch.device) -> Tensor:
    per_class = []
    for k, idx in enumerate(real.by_class):
        g = torch.Generator().manual_seed(kit.derive_seed(cfg.seed, 0xC0DE, k))
        if cfg.init == "random":
            per_class.append(torch.randn(cfg.ipc, 3, 32, 32, generator=g).to(device))
        else:  # random real images (repeated when the class has fewer)
            order = torch.randint(idx.numel(), (cfg.ipc,), generator=g) if idx.numel() < cfg.ipc else None
            order = torch.randperm(idx.numel(), generator=g)[: cfg.ipc] if order is None else order
            per_class.append(real.images[idx[order.to(idx.device)]])
    return torch.stack(per_class)


def image_update(cfg: Config, state: RunState, matcher: HeterogeneousFeatureMatcher, real: RealData, step: int,
                 augment: nn.Module) -> dict[str, float]:  # fmt: skip
    """Each class's (balanced) DM losses into the image gradient, normalised per image (§1.4), one SGD step."""
    syn, names, n_cls = state.synthetic, loss_names(cfg), len(real.classes)
    syn.grad = torch.zeros_like(syn)
    totals = torch.zeros(2 * len(names), dtype=torch.float64)
    for k, idx in enumerate(real.by_class):
        seed = kit.derive_seed(cfg.seed, state.iteration, step, k, 0xA06)
        g = torch.Generator().manual_seed(seed)
        xr = real.images[idx[torch.randperm(idx.numel(), generator=g)[: cfg.batch_real].to(idx.device)]]
        xs = syn[k]
        if not cfg.no_augment:  # the same transform for both batches
            xr, xs = augment(xr, seed=seed), augment(xs, seed=seed)
        losses = matcher(xr, xs)
        if not torch.isfinite(losses).all():
            bad = names[int((~torch.isfinite(losses)).nonzero()[0])]
            raise FloatingPointError(f"loss {bad!r} is not finite at outer iteration {state.iteration}, step {step}")
        if state.balancer is not None:
            state.balancer.backward(list(losses), syn, group=k)
            weights = state.balancer.weights(k)
        else:
            losses.sum().backward(inputs=[syn])
            weights = torch.ones(len(names))
        totals += torch.cat([losses.detach().cpu().double(), weights.cpu().double()]) / n_cls
    if not cfg.no_grad_norm:
        syn.grad.copy_(normalize_image_gradients(syn.grad))
    state.image_optimizer.step()
    with torch.no_grad():  # keep pixels in [0, 1]
        syn.copy_(kit.normalize(kit.denormalize(syn, kit.CIFAR10_MEAN, kit.CIFAR10_STD).clamp(0, 1)))
    return dict(zip([*names, *(f"w_{n}" for n in names)], totals.tolist(), strict=True))


# ------------------------------------------------------------------------------------------------------ run folder
def save_run(cfg: Config, folder: RunFolder, state: RunState, real: RealData) -> None:
    """Artefacts, then the checkpoint (atomic; the one it replaces is kept as checkpoint.prev.pt)."""
    syn, names = state.synthetic.detach().cpu(), loss_names(cfg)
    labels = torch.tensor(real.classes).repeat_interleave(cfg.ipc)
    kit.save_synthetic_set(folder.path("synthetic.pt"), syn.flatten(0, 1), labels, mean=kit.CIFAR10_MEAN,
                           std=kit.CIFAR10_STD, factor=1, ipc=cfg.ipc, iteration=state.iteration)  # fmt: skip
    kit.save_image_grid(syn, folder.path("grid.png"), mean=kit.CIFAR10_MEAN, std=kit.CIFAR10_STD, scale=2)
    if state.metrics:
        folder.write_metrics(state.metrics)
        kit.plot_metrics(folder.path("metrics.csv"), folder.path("losses.png"), columns=list(names),
                         title="HMDC-DM losses")  # fmt: skip
    if state.balancer is not None:
        kit.plot_balancer_history(state.balancer.history_arrays(), folder.path("balancer.png"), loss_names=names,
                                  title=f"HMDC-DM gradient balancing ({len(real.classes)} classes)")  # fmt: skip
    folder.save_checkpoint({"config": cfg.settings(), "synthetic": syn, "iteration": state.iteration,
                            "image_optimizer": state.image_optimizer.state_dict(), "metrics": state.metrics,
                            "balancer": None if state.balancer is None else state.balancer.state_dict()})  # fmt: skip


def run(cfg: Config, given: set[str], device: torch.device) -> None:
    """Validate every setting, then condense; nothing is written before every setting is known to work."""
    folder, saved = RunFolder(cfg.out, artefacts=ARTEFACTS), {}
    try:
        if cfg.resume:
            found = folder.load_checkpoint()
            if found.message:
                print(f"warning: {found.message}", file=sys.stderr)
            settings = resume_settings(folder.settings_from(found), cfg.settings(), given,
                                       defaults=Config().settings(), changeable=["iterations"])  # fmt: skip
            saved, cfg = found.state, dataclasses.replace(cfg, **settings)  # --iterations may extend a run
        else:
            folder.check_new(overwrite=cfg.overwrite)
    except RunFolderError as err:
        raise SettingError(f"{'--resume' if cfg.resume else '--out'}: {err}") from None
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    real = load_real_data(cfg, device)
    build_matcher(cfg, len(real.class_names), device, 0)  # the models can be built
    syn = (saved["synthetic"].to(device) if cfg.resume else initial_images(cfg, real, device)).requires_grad_(True)
    state = RunState(syn, torch.optim.SGD([syn], lr=cfg.lr_img, momentum=cfg.momentum_img), None)
    names = loss_names(cfg)
    if not cfg.no_balancer and len(names) > 1:
        state.balancer = GradientBalancer(len(names), num_groups=len(real.classes), interval=1,
                                          loss_names=names).to(device)  # fmt: skip
    if cfg.resume:
        state.image_optimizer.load_state_dict(saved["image_optimizer"])
        if state.balancer is not None:
            state.balancer.load_state_dict(saved["balancer"])
        state.iteration, state.metrics = saved["iteration"], list(saved["metrics"])
        if state.iteration > cfg.iterations:
            raise SettingError(f"--iterations: the run has done {state.iteration}, got {cfg.iterations}")
        folder.write_config(cfg.settings())
    else:  # every setting is valid: only now replace an old run (--overwrite)
        folder.start(cfg.settings())
        save_run(cfg, folder, state, real)
    augment = kit.DifferentiableAugment().to(device)
    with tqdm(total=cfg.iterations * cfg.inner_steps, initial=state.iteration * cfg.inner_steps, disable=cfg.quiet,
              desc="image updates", dynamic_ncols=True) as bar:  # fmt: skip
        while state.iteration < cfg.iterations:
            it = state.iteration
            matcher = build_matcher(cfg, len(real.class_names), device, it)
            projection_loss = align_projections(cfg, matcher, real, it)
            if state.balancer is not None:
                state.balancer.reset()  # new networks: new gradient scales (§1.1)
            for step in range(cfg.inner_steps):
                t0 = time.perf_counter()
                row = {"iteration": it, "step": step, "global_step": it * cfg.inner_steps + step}
                row |= image_update(cfg, state, matcher, real, step, augment)
                row |= {"projection_loss": projection_loss, "seconds": round(time.perf_counter() - t0, 4)}
                state.metrics.append(row)
                bar.update(1)
                bar.set_postfix({n: f"{row[n]:.3g}" for n in names})
            state.iteration += 1
            if state.iteration % cfg.checkpoint_every == 0 or state.iteration == cfg.iterations:
                save_run(cfg, folder, state, real)


def main(argv: list[str] | None = None) -> int:
    cfg, given = parse_config(argv)
    try:
        ctx = ranks.init_distributed(cfg.device)
    except (ValueError, TypeError) as err:
        print(f"error: --device: {err}", file=sys.stderr)
        return 2
    if ctx.enabled:
        print("error: this example runs in one process (no torchrun)", file=sys.stderr)
        return 2
    hint = f"the last checkpoint is intact: continue with --resume --out {cfg.out}"
    try:
        return ranks.run_guarded(lambda: run(cfg, given, ctx.device), ctx, resume_hint=hint)
    except (SettingError, FloatingPointError) as err:
        stop = "" if isinstance(err, SettingError) else f"; stopping. The last checkpoint in {cfg.out!r} is intact"
        print(f"error: {err}{stop}", file=sys.stderr)
        return 1 if stop else 2
    finally:
        ranks.shutdown_distributed(ctx)


if __name__ == "__main__":
    sys.exit(main())
