"""HMDC on CIFAR-10: condense a training set with two heterogeneous models, from the library's public parts.

    python examples/hmdc_cifar10.py                       # cpu preset: IPC 1, ConvNet-3 + ViT-Tiny at 32x32
    python examples/hmdc_cifar10.py --preset paper        # the paper (GPU): ViT-Tiny at 224, ImageNet weights
    python examples/hmdc_cifar10.py --resume --out DIR    # continue a run from its folder alone
    torchrun --nproc-per-node 2 examples/hmdc_cifar10.py  # classes split over 2 processes

The method is docs/method.md (§ below point there). Every random draw derives from (seed, outer iteration, step,
class), checkpoints fall between outer iterations: resumed or split runs compute bitwise what one process does.
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

from hmdc_modules import CNNAdapter, GradientBalancer, SpatialSemanticDecomposer, auto_adapter
from hmdc_modules import condensation as kit
from hmdc_modules import distributed as ranks
from hmdc_modules.condensation.run_folder import RunFolder, RunFolderError, resume_settings
from hmdc_modules.functional import normalize_image_gradients
from hmdc_modules.objective import HMDCObjective, NonFiniteLossError


# ---------------------------------------------------------------------------------------------------- configuration
def opt(default: Any, help: str, *, low: float | None = None, above: float | None = None, choices: Any = None) -> Any:
    return field(default=default, metadata={"help": help, "low": low, "above": above, "choices": choices})


@dataclass(frozen=True)
class Config:
    """Every setting of a run; ``--preset`` fills them and any flag overrides the preset."""

    preset: str = opt("cpu", "named settings: cpu (a 2-core CPU, minutes) or paper (a GPU)", choices=["cpu", "paper"])
    data_root: str = opt("data/cifar10", "CIFAR-10 folder (cifar-10-batches-py, or train/<class>/*.png)")
    download: bool = opt(False, "download CIFAR-10 into --data-root with torchvision (needs internet)")
    out: str = opt("runs/hmdc_cifar10", "run folder: config, checkpoints, synthetic set, metrics, figures")
    resume: bool = opt(False, "continue the run in --out; its settings come from its checkpoint")
    overwrite: bool = opt(False, "replace the run that --out holds (refused without this or --resume)")
    device: str = opt("auto", "auto (CUDA when available), cpu, cuda, cuda:1, ...")
    seed: int = opt(0, "run seed; every random draw derives from it", low=0)
    quiet: bool = opt(False, "no progress bars")
    classes: str = opt("", "classes to condense, by index or name (e.g. 3,8 or cat,ship); empty: all")
    real_per_class: int = opt(200, "real images kept per class (0: all)", low=0)
    real_subset: str = opt("all", "train images: all, or the C/P half (protocol v2)", choices=["all", "C", "P"])
    model_a: str = opt("convnet", "model A: convnet or a timm name (§6)")
    model_b: str = opt("vit_tiny_patch16_224", "model B: a timm name (§6)")
    image_size_a: int = opt(32, "input side of model A (images are resized to it)", low=8)
    image_size_b: int = opt(32, "input side of model B", low=8)
    patch_size_b: int = opt(4, "patch size of a ViT model B (0: the architecture's own)", low=0)
    weights_b: str = opt("", "local weights file for model B (reloaded every outer iteration, new head)")
    pretrained_b: str = opt("", "timm pretrained tag for model B, through timm's cache (reloaded every iteration)")
    lr_model_a: float = opt(0.01, "SGD learning rate of model A (§5.2)", above=0)
    lr_model_b: float = opt(0.001, "SGD learning rate of model B (§5.2)", above=0)
    ipc: int = opt(1, "stored synthetic images per class", low=1)
    factor: int = opt(2, "multi-formation: factor x factor images in each stored one (§5.3)", choices=[1, 2, 4, 8])
    init: str = opt("kmeans", "initial images (§5.3)", choices=["random", "real", "kmeans"])
    lr_img: float = opt(5e-3, "SGD learning rate of the synthetic images (§5.2)", above=0)
    momentum_img: float = opt(0.5, "SGD momentum of the synthetic images", low=0)
    iterations: int = opt(3, "outer iterations, networks re-initialised each (§5.1); 0: the initial set only", low=0)
    inner_steps: int = opt(8, "image updates per outer iteration", low=1)
    model_steps: int = opt(3, "model-training updates after each image update (§4.2)", low=0)
    projection_steps: int = opt(3, "projection/matching-matrix updates after each image update (§4.3)", low=0)
    batch_real: int = opt(16, "real images per class in gradient matching", low=1)
    batch_train: int = opt(64, "batch size of model and projection training", low=1)
    select_every: int = opt(10, "re-select the real batches every this many image updates (§5.5)", low=1)
    real_selection: str = opt("kmeans", "real batches: k-means representatives or random", choices=["kmeans", "random"])
    balance_interval: int = opt(10, "the balancer samples every this many calls per class (§1.1)", low=1)
    lr_projection: float = opt(1e-2, "Adam learning rate of projections and matching matrix (§4.3)", above=0)
    distance: str = opt("sse", "gradient distance (§2)", choices=["sse", "dc", "mse", "cosine"])
    precision: str = opt("fp32", "bf16: autocast (needs bfloat16 units); tf32: CUDA", choices=["fp32", "bf16", "tf32"])
    reference_exact: bool = opt(False, "as the authors' code: ConvNet's last tap duplicated, balancer init 1e-6")
    single_model: bool = opt(False, "ablation: model A alone (no model B, no distillation)")
    no_balancer: bool = opt(False, "ablation: weight every loss 1")
    no_distillation: bool = opt(False, "ablation: no distillation term")
    no_augment: bool = opt(False, "ablation: no differentiable augmentation")
    no_cutmix: bool = opt(False, "ablation: no cutmix")
    no_grad_norm: bool = opt(False, "ablation: no per-image gradient normalisation (§1.4)")

    def settings(self) -> dict[str, Any]:  # what a run folder's checkpoint pins (not where things are)
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in LOCATIONS}


PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},  # about 14 minutes on a 2-core CPU
    "paper": dict(ipc=10, iterations=100, inner_steps=100, model_steps=17, projection_steps=17, batch_real=128,
                  batch_train=128, image_size_b=224, patch_size_b=16, real_per_class=0,
                  pretrained_b="augreg_in21k_ft_in1k", reference_exact=True),
}  # fmt: skip
LOCATIONS = ("data_root", "download", "out", "resume", "overwrite", "device", "quiet")  # not settings of the run


class SettingError(Exception):
    """A setting or input that cannot work: one ``error:`` line, exit status 2, nothing written."""


def build_parser(defaults: Config, suppress: bool = False) -> argparse.ArgumentParser:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter, add_help=not suppress)
    for f in dataclasses.fields(Config):
        flag, default = "--" + f.name.replace("_", "-"), argparse.SUPPRESS if suppress else getattr(defaults, f.name)
        if f.type == "bool":
            action = "store_true" if f.name.startswith("no_") else argparse.BooleanOptionalAction  # no --no-no-x
            parser.add_argument(flag, action=action, default=default, help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            kwargs = {"type": kind, "choices": f.metadata["choices"]}
            parser.add_argument(flag, default=default, help=f.metadata["help"], **kwargs)
    return parser


def parse_config(argv: list[str] | None = None) -> tuple[Config, set[str]]:
    """The settings, and the names of those given explicitly (a resumed run must agree with them)."""
    given = vars(build_parser(Config(), suppress=True).parse_known_args(argv)[0])  # the flags on the command line
    parser = build_parser(dataclasses.replace(Config(), **PRESETS[given.get("preset", "cpu")]))
    cfg = Config(**vars(parser.parse_args(argv)))
    if "weights_b" in given and "pretrained_b" not in given:  # a local file replaces the preset's hub weights
        cfg = dataclasses.replace(cfg, pretrained_b="")
    for f in dataclasses.fields(Config):
        low, above, value = f.metadata["low"], f.metadata["above"], getattr(cfg, f.name)
        if (low is not None and value < low) or (above is not None and not value > above):
            bound = f">= {low}" if low is not None else f"> {above}"
            parser.error(f"argument --{f.name.replace('_', '-')}: must be {bound}, got {value}")
    if cfg.momentum_img >= 1:
        parser.error(f"argument --momentum-img: must be < 1, got {cfg.momentum_img}")
    if cfg.weights_b and cfg.pretrained_b:
        parser.error(f"--weights-b and --pretrained-b both name weights ({cfg.weights_b!r}, {cfg.pretrained_b!r})")
    if cfg.weights_b and not Path(cfg.weights_b).is_file():
        parser.error(f"argument --weights-b: no file at {cfg.weights_b!r}")
    if cfg.resume and cfg.overwrite:
        parser.error("--resume and --overwrite exclude each other: continue the run, or replace it")
    return (dataclasses.replace(cfg, no_distillation=True) if cfg.single_model else cfg), set(given)


# ------------------------------------------------------------------------------------------------------------- data
@dataclass
class RealData:
    images: Tensor  # [N, 3, 32, 32], normalised, on the device
    labels: Tensor  # [N], indices into class_names
    by_class: list[Tensor]  # indices of each condensed class
    classes: list[int]  # the condensed classes
    class_names: list[str]  # every class of the data set (the models' outputs)


def read_classes(cfg: Config) -> tuple[list[str], list[int]]:
    """The data's class names (without decoding an image) and the classes to condense."""
    try:
        names = list(kit.CIFAR10_CLASSES if cfg.download else kit.dataset_classes(cfg.data_root))
        return names, kit.parse_classes(cfg.classes, names, name="--classes")
    except (FileNotFoundError, ValueError) as err:
        raise SettingError(f"--data-root: {err}" if isinstance(err, FileNotFoundError) else str(err)) from None


def load_real_data(cfg: Config, names: list[str], classes: list[int], device: torch.device) -> RealData:
    try:
        images, labels = kit.load_cifar10(cfg.data_root, "train", download=cfg.download, progress=not cfg.quiet,
                                          classes=classes, per_class=cfg.real_per_class or None,
                                          subset=cfg.real_subset)  # fmt: skip
    except (FileNotFoundError, ValueError) as err:
        raise SettingError(f"--data-root: {err}" if isinstance(err, FileNotFoundError) else str(err)) from None
    x, y = kit.normalize(images, kit.CIFAR10_MEAN, kit.CIFAR10_STD).to(device), labels.to(device)
    return RealData(x, y, [torch.nonzero(y == c).flatten() for c in classes], classes, names)


# --------------------------------------------------------------------------------------------------------- networks
def build_networks(cfg: Config, num_classes: int, device: torch.device, iteration: int,
                   balancer: GradientBalancer | None = None) -> tuple[HMDCObjective, list[Any]]:  # fmt: skip
    """Fresh networks for an outer iteration (§5.1), with pretrained weights reloaded and a new random head; the
    objective holds them (adapters, decomposer, balancer), then come the models' SGD and the projections' Adam."""
    torch.manual_seed(kit.derive_seed(cfg.seed, iteration, 0x5EED))
    specs = [("a", cfg.model_a, cfg.image_size_a, 0, "", "", cfg.lr_model_a)]
    if not cfg.single_model:
        specs.append(("b", cfg.model_b, cfg.image_size_b, cfg.patch_size_b, cfg.weights_b, cfg.pretrained_b,
                      cfg.lr_model_b))  # fmt: skip
    adapters, groups = [], []
    for key, name, size, patch, weights, tag, lr in specs:
        try:
            model = kit.create_model(name, num_classes, image_size=size, patch_size=patch or None,
                                     weights=weights or None, **({"pretrained": tag} if tag else {}))  # fmt: skip
        except Exception as err:  # an unknown name, a bad size or file, hub weights out of reach: one line
            flag = f"--pretrained-b {tag}" if tag else f"--model-{key} {name}"  # the hub's line says what to do
            raise SettingError(f"{flag}: {ranks.first_line(err, 1000)}") from None
        layers = getattr(model.to(device), "feature_layers", None)
        if cfg.reference_exact and layers:  # §3.1: the deepest map tapped twice (its pool and its whole block)
            adapters.append(CNNAdapter(model, [*layers, layers[-1].rsplit(".", 1)[0]], input_size=size))
        else:
            adapters.append(auto_adapter(model, input_size=size if size != 32 else None))
        groups.append({"params": list(model.parameters()), "lr": lr})
    distill = not cfg.no_distillation and len(adapters) > 1
    decomposer = SpatialSemanticDecomposer(adapters, image_size=32).to(device) if distill else None
    projection_optimizer = torch.optim.Adam(decomposer.parameters(), lr=cfg.lr_projection) if decomposer else None
    objective = HMDCObjective(adapters, decomposer=decomposer, balancer=balancer, distance=cfg.distance,
                              model_names=[s[0] for s in specs], precision=cfg.precision)  # fmt: skip
    return objective, [torch.optim.SGD(groups), projection_optimizer]


def embed_images(adapter: nn.Module, images: Tensor) -> Tensor:  # deepest semantic vector, in eval mode (§5.5)
    return kit.embed(adapter, images, 500, take=lambda out: out.features[-1].semantic)


# ----------------------------------------------------------------------------------------------------- image update
@dataclass
class RunState:
    synthetic: Tensor  # [classes, ipc, 3, 32, 32], normalised, packed (factor x factor tiles), a leaf
    image_optimizer: torch.optim.Optimizer
    balancer: GradientBalancer | None
    iteration: int = 0  # outer iterations completed
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one row per image update


def initial_images(cfg: Config, real: RealData, device: torch.device) -> Tensor:
    """§5.3: Gaussian noise, random real images, or k-means-chosen real images, multi-formation encoded."""
    n, per_class = cfg.factor**2 * cfg.ipc, []
    for k, idx in enumerate(real.by_class):
        g = torch.Generator().manual_seed(kit.derive_seed(cfg.seed, 0xC0DE, k))
        if cfg.init == "random":
            per_class.append(torch.randn(cfg.ipc, 3, 32, 32, generator=g).to(device))
            continue
        if cfg.init == "real" or idx.numel() <= n:  # random real images (repeated when the class has fewer)
            few = idx.numel() < n
            order = torch.randint(idx.numel(), (n,), generator=g) if few else torch.randperm(idx.numel(), generator=g)
            pick = idx[order[:n].to(idx.device)]
        else:
            torch.manual_seed(kit.derive_seed(cfg.seed, 0xC0DE, k, 1))
            embedder = auto_adapter(kit.create_model(cfg.model_a, len(real.class_names), image_size=cfg.image_size_a))
            emb = embed_images(embedder.to(device), real.images[idx]).cpu()
            pick = idx[kit.select_representatives(emb, n, unique=True, generator=g).to(idx.device)]
        per_class.append(kit.encode_formation(real.images[pick], cfg.factor))
    return torch.stack(per_class)


def select_real_batches(cfg: Config, nets: HMDCObjective, real: RealData, it: int, step: int,
                        owned: list[int]) -> dict[int, Tensor]:  # fmt: skip
    """Per owned class, the real batch: k-means representatives under one model, alternating in blocks (§5.5)."""
    adapters, batches = nets.adapters, {}
    adapter = adapters[(step // cfg.select_every) % len(adapters)]
    for k in owned:
        idx, g = real.by_class[k], torch.Generator().manual_seed(kit.derive_seed(cfg.seed, it, step, k, 0x5E1))
        if cfg.real_selection == "random" or idx.numel() <= cfg.batch_real:
            pick = torch.randperm(idx.numel(), generator=g)[: cfg.batch_real]
        else:
            emb = embed_images(adapter, real.images[idx]).cpu()
            pick = kit.select_representatives(emb, cfg.batch_real, generator=g)
        batches[k] = idx[pick.to(idx.device)]
    return batches


def augment_pair(cfg: Config, augment: nn.Module, x: Tensor, y: Tensor, k: int, seed: int, salt: int):
    """Shared-seed augmentation (the same transform for the real and the synthetic batch), then cutmix (§5.4)."""
    x = x if cfg.no_augment else augment(x, seed=seed)
    if cfg.no_cutmix:
        return x, nn.functional.one_hot(y, k).to(x.dtype)
    return kit.cutmix(x, y, k, p=0.5, generator=torch.Generator().manual_seed(seed + salt))


def image_update(cfg: Config, state: RunState, nets: HMDCObjective, real: RealData, batches: dict[int, Tensor],
                 step: int, augment: nn.Module, ctx: ranks.DistributedContext) -> dict[str, float]:  # fmt: skip
    """Each owned class's balanced objective into the image gradient (§1.3), summed over ranks, normalised (§1.4)."""
    syn, names, n_cls, k_out = state.synthetic, nets.loss_names, len(real.classes), len(real.class_names)
    syn.grad = torch.zeros_like(syn)  # every owned class adds its gradient; a rank without classes adds none
    totals, failure = torch.zeros(2 * len(names), dtype=torch.float64), None  # class means of losses and weights
    for k in ctx.owned(n_cls):
        seed = kit.derive_seed(cfg.seed, state.iteration, step, k, 0xA06)
        syn_x = kit.decode_formation(syn[k], cfg.factor)
        syn_y = torch.full((syn_x.shape[0],), real.classes[k], dtype=torch.long, device=syn.device)
        xr, tr = augment_pair(cfg, augment, real.images[batches[k]], real.labels[batches[k]], k_out, seed, 1)
        xs, ts = augment_pair(cfg, augment, syn_x, syn_y, k_out, seed, 2)
        try:
            result = nets.step(xr, tr, xs, ts, syn, group=k)
        except NonFiniteLossError as err:
            failure = f"loss {err.loss_name!r} is {err.value} at outer iteration {state.iteration}, step {step}"
            break
        totals += torch.tensor([*result.losses, *result.weights], dtype=torch.float64) / n_cls
    if ranks.any_rank(failure is not None, ctx):  # every rank stops, with the first failing rank's message
        raise FloatingPointError(next(m for m in ranks.all_gather_objects(failure, ctx) if m is not None))
    ranks.all_reduce_sum_(syn.grad, ctx)  # each class's gradient comes from one rank: the sum is exact
    totals = ranks.all_reduce_sum_(totals.to(syn.device), ctx)
    if not torch.isfinite(syn.grad).all():
        raise FloatingPointError(f"the image gradient is not finite at outer iteration {state.iteration}, step {step}")
    if not cfg.no_grad_norm:
        syn.grad.copy_(normalize_image_gradients(syn.grad))
    state.image_optimizer.step()
    with torch.no_grad():  # keep pixels in [0, 1] (clamp in de-normalised space)
        syn.copy_(kit.normalize(kit.denormalize(syn, kit.CIFAR10_MEAN, kit.CIFAR10_STD).clamp(0, 1)))
    return dict(zip([*names, *(f"w_{n}" for n in names)], totals.tolist(), strict=True))


# ------------------------------------------------------------------------------------------------- network training
def train_networks(cfg: Config, nets: HMDCObjective, optimizers: list[Any], real: RealData, it: int, step: int,
                   augment: nn.Module, ctx: ranks.DistributedContext) -> dict[str, float]:  # fmt: skip
    """§4.2: models on real data (CE of each + D_MD); §4.3: projections on frozen features (D_MD)."""
    g, all_idx = torch.Generator().manual_seed(kit.derive_seed(cfg.seed, it, step, 0x7A1)), torch.cat(real.by_class)
    adapters, decomposer, model_loss, projection_loss = nets.adapters, nets.decomposer, 0.0, 0.0
    for _ in range(cfg.model_steps):
        idx = all_idx[torch.randint(len(all_idx), (cfg.batch_train,), generator=g).to(all_idx.device)]
        x = real.images[idx] if cfg.no_augment else augment(real.images[idx], generator=g)
        x, t = kit.cutmix(x, real.labels[idx], len(real.class_names), p=0.0 if cfg.no_cutmix else 0.5, generator=g)
        loss = nets.training_loss(x, t)  # CE of each model + D_MD
        if not torch.isfinite(loss):
            raise FloatingPointError(f"model-training loss is {loss.item()} at outer iteration {it}, step {step}")
        optimizers[0].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[0].step()
        model_loss += loss.item() / cfg.model_steps
    if optimizers[1] is not None:
        for _ in range(cfg.projection_steps):
            idx = all_idx[torch.randint(len(all_idx), (cfg.batch_train,), generator=g).to(all_idx.device)]
            loss = nets.alignment_loss(real.images[idx])  # D_MD on frozen features
            optimizers[1].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[1].step()
            projection_loss += loss.item() / cfg.projection_steps
    if ctx.enabled and ctx.device.type != "cpu":  # a GPU may drift by rounding: rank 0's networks win
        ranks.broadcast_module_(nn.ModuleList(adapters if decomposer is None else [*adapters, decomposer]), ctx)
    return {"model_loss": model_loss, "projection_loss": projection_loss}


# ------------------------------------------------------------------------------------------------------- run folder
ARTEFACTS = ("synthetic.pt", "grid.png", "losses.png", "balancer.png")  # besides config, checkpoints and metrics


def read_checkpoint(cfg: Config, given: set[str], ctx: ranks.DistributedContext) -> tuple[dict[str, Any], Config]:
    """Rank 0 reads the newest readable checkpoint (or the previous one); its settings are the run's."""
    folder = RunFolder(cfg.out, artefacts=ARTEFACTS)
    try:  # only rank 0's machine needs the run folder
        found = ranks.on_main(folder.load_checkpoint, ctx, errors=(RunFolderError,))
        if found.message and ctx.is_main:
            print(f"warning: {found.message}", file=sys.stderr)
        old = resume_settings(folder.settings_from(found), cfg.settings(), given, defaults=Config().settings())
    except RunFolderError as err:
        raise SettingError(f"--resume: {err}") from None
    return found.state, dataclasses.replace(cfg, **old)


def save_run(cfg: Config, state: RunState, real: RealData, names: tuple[str, ...]) -> None:
    """Artefacts, then the checkpoint, each written atomically: a stop between them redoes one (deterministic)
    outer iteration; the checkpoint it replaces is kept as checkpoint.prev.pt."""
    folder, syn = RunFolder(cfg.out, artefacts=ARTEFACTS), state.synthetic.detach().cpu()
    labels = torch.tensor(real.classes).repeat_interleave(cfg.ipc)
    kit.save_synthetic_set(folder.path("synthetic.pt"), syn.flatten(0, 1), labels, mean=kit.CIFAR10_MEAN,
                           std=kit.CIFAR10_STD, factor=cfg.factor, ipc=cfg.ipc, iteration=state.iteration)  # fmt: skip
    kit.save_image_grid(syn, folder.path("grid.png"), mean=kit.CIFAR10_MEAN, std=kit.CIFAR10_STD, factor=cfg.factor,
                        class_names=[real.class_names[k] for k in real.classes])  # fmt: skip
    if state.metrics:  # plain CSV: numbers only, after the header
        folder.write_metrics(state.metrics)
        kit.plot_metrics(folder.path("metrics.csv"), folder.path("losses.png"), columns=[*names, "model_loss"],
                         title="HMDC losses")  # fmt: skip
    if state.balancer is not None:
        kit.plot_balancer_history(state.balancer.history_arrays(), folder.path("balancer.png"), loss_names=names,
                                  title=f"HMDC gradient balancing ({len(real.classes)} classes)")  # fmt: skip
    folder.save_checkpoint({"config": cfg.settings(), "synthetic": syn, "iteration": state.iteration,
                            "image_optimizer": state.image_optimizer.state_dict(), "metrics": state.metrics,
                            "balancer": None if state.balancer is None else state.balancer.state_dict()})  # fmt: skip


# -------------------------------------------------------------------------------------------------------- main loop
def run(cfg: Config, given: set[str], ctx: ranks.DistributedContext) -> None:
    """Validate every setting, then condense; nothing is written before every setting is known to work."""
    device, saved, folder = ctx.device, {}, RunFolder(cfg.out, artefacts=ARTEFACTS)
    if cfg.resume:
        saved, cfg = read_checkpoint(cfg, given, ctx)
    try:
        folder.check_new(overwrite=cfg.overwrite or cfg.resume)
    except RunFolderError as err:
        raise SettingError(f"--out: {err}") from None
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    if cfg.precision == "tf32" and device.type != "cuda":
        raise SettingError(f"--precision tf32 needs a CUDA device, got {device.type!r} (use fp32 or bf16)")
    class_names, classes = read_classes(cfg)
    names = build_networks(cfg, len(class_names), device, 0)[0].loss_names  # the models can be built
    real = load_real_data(cfg, class_names, classes, device)
    syn = (saved["synthetic"].to(device) if cfg.resume else initial_images(cfg, real, device)).requires_grad_(True)
    state = RunState(syn, torch.optim.SGD([syn], lr=cfg.lr_img, momentum=cfg.momentum_img), None)
    if not cfg.no_balancer and len(names) > 1:
        state.balancer = GradientBalancer(len(names), num_groups=len(real.classes), interval=cfg.balance_interval,
                                          loss_names=names, init_value=1e-6 if cfg.reference_exact else 0
                                          ).to(device)  # fmt: skip
    if cfg.resume:
        state.image_optimizer.load_state_dict(saved["image_optimizer"])
        if state.balancer is not None:
            state.balancer.load_state_dict(saved["balancer"])
        state.iteration, state.metrics = saved["iteration"], list(saved.get("metrics", []))
    owned = ctx.owned(len(real.classes))
    if state.balancer is not None:
        ranks.sync_balancer_(state.balancer, owned, ctx)  # the common starting point of the per-rank statistics
    if ctx.is_main and not cfg.resume:  # every setting is valid: only now replace an old run (--overwrite)
        folder.start(cfg.settings())
        save_run(cfg, state, real, names)
    augment = kit.DifferentiableAugment().to(device)
    with tqdm(total=cfg.iterations * cfg.inner_steps, initial=state.iteration * cfg.inner_steps,
              disable=cfg.quiet or not ctx.is_main, desc="image updates", dynamic_ncols=True) as bar:  # fmt: skip
        while state.iteration < cfg.iterations:
            it, batches = state.iteration, {}
            nets, optimizers = build_networks(cfg, len(real.class_names), device, it, state.balancer)
            if state.balancer is not None:
                state.balancer.reset()  # new networks: new gradient scales (§1.1)
            for step in range(cfg.inner_steps):
                t0 = time.perf_counter()
                if step % cfg.select_every == 0:
                    batches = select_real_batches(cfg, nets, real, it, step, owned)
                row = {"iteration": it, "step": step, "global_step": it * cfg.inner_steps + step}
                row |= image_update(cfg, state, nets, real, batches, step, augment, ctx)
                row |= train_networks(cfg, nets, optimizers, real, it, step, augment, ctx)
                row["seconds"] = round(time.perf_counter() - t0, 4)
                state.metrics.append(row)
                bar.update(1)
                weights = {f"w_{n}": f"{row['w_' + n]:.1e}" for n in names}  # scientific: they reach 1e-4
                bar.set_postfix({n: f"{row[n]:.3g}" for n in names} | weights)
            state.iteration += 1
            if state.balancer is not None:
                ranks.sync_balancer_(state.balancer, owned, ctx)
            if ctx.is_main:
                save_run(cfg, state, real, names)


def main(argv: list[str] | None = None) -> int:
    cfg, given = parse_config(argv)
    try:
        ctx = ranks.init_distributed(cfg.device)
    except (ValueError, TypeError) as err:
        print(f"error: --device: {err}", file=sys.stderr)
        return 2
    hint = f"the last checkpoint is intact: continue with --resume --out {cfg.out}, on any number of processes"
    status = 1  # until the run has finished on this rank
    try:
        status = ranks.run_guarded(lambda: run(cfg, given, ctx), ctx, resume_hint=hint)
        return status
    except (SettingError, FloatingPointError) as err:  # a bad setting (2), or a run that cannot go on (1)
        stop = "" if isinstance(err, SettingError) else f"; stopping. The last checkpoint in {cfg.out!r} is intact"
        print(f"{f'[rank {ctx.rank}] ' if ctx.enabled else ''}error: {err}{stop}", file=sys.stderr)
        return 1 if stop else 2
    finally:
        ranks.shutdown_distributed(ctx, synchronize=status == 0)


if __name__ == "__main__":
    sys.exit(main())
