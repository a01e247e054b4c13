"""The command line of ``python -m hmdc_modules.evaluate``: parsers, argument checks, and the run.

Every flag is checked before anything is written: numbers and lists by the parser's types, model names, set files
and groups while building the records, and the output folder by the suite before it trains. A bad input ends the
command with exit status 2 and one ``error:`` line (argparse's usage line first for a malformed flag), never a
traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from hmdc_modules._cli_types import non_negative_float, non_negative_int, positive_int, probability

if TYPE_CHECKING:
    from hmdc_modules.distributed import DistributedContext
    from hmdc_modules.evaluation.records import EvalSettings, ModelSpec, SetSpec

__all__ = ["build_parser", "build_random_parser", "main"]

_PAPER_ALIAS = "paper"
_PAPER_FT_ALIAS = "paper-ft"
_BASE_ERRORS = (OSError, ValueError, TypeError)  # FileNotFoundError and PermissionError are OSErrors


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors that end the command with one line: bad input, and hub weights out of reach."""
    from hmdc_modules.condensation import PretrainedWeightsUnavailable

    return (*_BASE_ERRORS, PretrainedWeightsUnavailable)


# ----------------------------------------------------------------------------------------------------------------
# Argument types
# ----------------------------------------------------------------------------------------------------------------


_positive_int, _non_negative_int = positive_int, non_negative_int


_probability, _non_negative_float = probability, non_negative_float


def _default_lr(text: str) -> float | str:
    if text == "paper":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a learning rate or 'paper', got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"the learning rate must be a finite number > 0, got {text!r}")
    return value


def _lr_schedule(text: str) -> str:
    from hmdc_modules.evaluation.augmentation import check_lr_schedule

    try:
        return check_lr_schedule(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected constant, half or step:N (N >= 1), got {text!r}") from None


def _seeds(text: str) -> list[int]:
    """``"3"`` -> seeds 0, 1, 2; ``"158,159,700"`` -> those seeds."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count (3) or a comma-separated seed list, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected a count or seeds, got {text!r}")
    if "," not in text:
        if values[0] < 1:
            raise argparse.ArgumentTypeError(f"the seed count must be >= 1, got {values[0]}")
        return list(range(values[0]))
    if any(v < 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"seeds must be distinct integers >= 0, got {text!r}")
    return values


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _learning_rate(text: str) -> tuple[str, float]:
    name, value = _assignment(text)
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=LR with a number LR, got {text!r}") from None
    if not (math.isfinite(rate) and rate > 0):
        raise argparse.ArgumentTypeError(f"the learning rate must be a finite number > 0, got {text!r}")
    return name, rate


def _class_list(text: str) -> list[int]:
    """``"0,1,2"`` or CIFAR-10 class names (``"cat,dog"``) -> distinct class indices (see ``parse_classes``)."""
    from hmdc_modules.condensation import CIFAR10_CLASSES, parse_classes

    try:
        return parse_classes(text, CIFAR10_CLASSES)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# ----------------------------------------------------------------------------------------------------------------
# Parsers
# ----------------------------------------------------------------------------------------------------------------


def _protocol_summary(settings: dict[str, Any]) -> str:
    lr = "per-model lr" if settings["lr"] is None else f"lr {settings['lr']}"
    tests = f"tested every {settings['eval_every']}" if settings["eval_every"] else "tested at the end"
    return (
        f"{settings['epochs']} epochs, {lr}, {settings['lr_schedule']} schedule, batch {settings['batch_size']}, "
        f"{settings['augment']} augmentation, cutmix {settings['cutmix_p']}, {tests}, {settings['metric']} accuracy"
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of the evaluation command (``python -m hmdc_modules.evaluate SET_OR_RUN ...``)."""
    from hmdc_modules import evaluate
    from hmdc_modules.condensation.precision import PRECISIONS
    from hmdc_modules.evaluation.augmentation import AUGMENT_MODES
    from hmdc_modules.evaluation.foreign import SET_FORMATS
    from hmdc_modules.evaluation.pool import PAPER_FT_POOL, PAPER_POOL
    from hmdc_modules.evaluation.protocols import DEFAULT_PROTOCOL, PROTOCOLS

    parser = argparse.ArgumentParser(
        prog="python -m hmdc_modules.evaluate",
        description=evaluate.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "sets", nargs="+", metavar="SET_OR_RUN", help="synthetic-set files (.pt) or run folders holding synthetic.pt"
    )
    parser.add_argument(
        "--name",
        action="append",
        default=None,
        help="report name of the corresponding set, in order (repeat once per set; default: the folder names)",
    )
    parser.add_argument(
        "--group",
        action="append",
        default=None,
        help="report column of the corresponding set, in order (repeat once per set): sets sharing a group, such "
        "as one method's condensation seeds, are pooled into one mean ± std (default: each set its own column)",
    )
    parser.add_argument(
        "--models",
        default=_PAPER_ALIAS,
        help="comma-separated entries: 'convnet' or a timm name (from scratch); NAME_ft (timm's pretrained weights, "
        "backbone loaded, head new, fine-tuned); NAME@weights=FILE or NAME@pretrained=TAG (labelled NAME_ft), "
        "optionally @label=LABEL. 'paper' (the default) stands for the paper's seven from scratch: "
        + ", ".join(PAPER_POOL)
        + "; 'paper-ft' for the paper's pool as the authors ran it: "
        + ", ".join(PAPER_FT_POOL)
        + " (pretrained at 224 px, ConvNet at 32)",
    )
    parser.add_argument(
        "--seeds",
        type=_seeds,
        default=[0, 1, 2],
        help="a count N (seeds 0..N-1) or a list like 158,159,700 (default: 3)",
    )
    protocols = parser.add_argument_group(
        "protocol",
        "A protocol fixes every training setting below; each flag overrides its one setting. "
        "The results files record the protocol and every setting used.",
    )
    protocols.add_argument(
        "--protocol",
        choices=sorted(PROTOCOLS),
        default=DEFAULT_PROTOCOL,
        help="; ".join(f"{p.name}: {p.title} ({_protocol_summary(p.settings)})" for p in PROTOCOLS.values())
        + f". Default: {DEFAULT_PROTOCOL}, because this library reproduces the HMDC paper, whose tables use it; "
        "use dsa to set numbers beside DC/DSA/DM/MTT tables and ddranking beside DD-Ranking's hard-label scores",
    )
    protocols.add_argument("--epochs", type=_positive_int, default=None, help="training epochs")
    protocols.add_argument(
        "--eval-every",
        type=_non_negative_int,
        default=None,
        help="test every K epochs, and after the last one; 0: only after the last",
    )
    protocols.add_argument("--batch-size", type=_positive_int, default=None, help="training batch")
    protocols.add_argument("--momentum", type=_non_negative_float, default=None, help="SGD momentum")
    protocols.add_argument("--weight-decay", type=_non_negative_float, default=None, help="SGD weight decay")
    protocols.add_argument(
        "--default-lr",
        type=_default_lr,
        default=None,
        metavar="LR|paper",
        help="learning rate of every model without its own --lr; 'paper': the per-model rates of the HMDC protocol",
    )
    protocols.add_argument(
        "--lr-schedule",
        type=_lr_schedule,
        default=None,
        metavar="constant|half|step:N",
        help="constant; half: x lr-decay at epoch E/2 (momentum restarted, as DC/DSA); step:N: x lr-decay every N "
        "epochs (StepLR, as DD-Ranking)",
    )
    protocols.add_argument("--lr-decay", type=_non_negative_float, default=None, help="factor of each decay (0.1)")
    protocols.add_argument(
        "--augment",
        choices=list(AUGMENT_MODES),
        default=None,
        help="idc: flip, colour, one geometric op and cutout on every image; dsa: DSA's one op per batch; none",
    )
    protocols.add_argument("--no-augment", action="store_true", help="the same as --augment none")
    protocols.add_argument(
        "--cutmix-p", type=_probability, default=None, help="cutmix probability for non-ViT models; 0 disables"
    )
    protocols.add_argument(
        "--metric",
        choices=["best", "final"],
        default=None,
        help="the accuracy the reports name first (both are always recorded); best selects on the test set",
    )
    protocols.add_argument(
        "--ignore-learned-lr",
        action="store_true",
        help="train with the protocol's learning rate even when a set holds a learned one (MTT's lr_best.pt)",
    )
    parser.add_argument(
        "--lr",
        type=_learning_rate,
        action="append",
        default=[],
        metavar="NAME=LR",
        help="learning rate of one model (repeatable); default: --default-lr, else the protocol's (hmdc per model: "
        "ConvNet 1e-2, ResNet18/50 1e-3, ResNet101 1e-4, ViT-Tiny/Small 1e-3, ViT-Base 1e-4, others 1e-3)",
    )
    parser.add_argument(
        "--weights",
        type=_assignment,
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="start model NAME (its label) from this local weights file (repeatable), the same as NAME@weights=PATH "
        "in --models; default: from scratch, nothing downloaded",
    )
    parser.add_argument(
        "--image-size",
        type=_positive_int,
        default=None,
        help="input side the models see (default: 32; 224 for hub-pretrained _ft entries; a library weights "
        "file's recorded size)",
    )
    parser.add_argument(
        "--patch-size",
        type=_positive_int,
        default=None,
        help="ViT patch size (default: image size // 8 below 224, i.e. 4 at 32; the model's own from 224)",
    )
    parser.add_argument(
        "--convnet-width", type=_positive_int, default=None, help="ConvNet channels (default: 128, the ConvNet-3)"
    )
    foreign = parser.add_argument_group(
        "sets from other tools",
        "Formats: hmdc (this library's synthetic.pt), hmdc-reference (the HMDC authors' synthetic_images.pth), "
        "dc (DC/DSA/DM res_*.pt), mtt (MTT-style images_best.pt + labels_best.pt [+ lr_best.pt]), idc (IDC/DREAM "
        "data.pt), tensor (a bare image tensor with --set-labels, an images/labels dict, or a pair). The options "
        "apply to every set given.",
    )
    foreign.add_argument(
        "--set-format", choices=list(SET_FORMATS), default="auto", help="the sets' format (default: detect it)"
    )
    foreign.add_argument(
        "--set-normalization",
        default=None,
        metavar="dc|imagenet|none|M1,M2,M3/S1,S2,S3",
        help="how the stored images are normalised (required for mtt, idc and tensor files; zca is refused)",
    )
    foreign.add_argument("--set-labels", default=None, metavar="FILE", help="labels file of a bare image tensor")
    foreign.add_argument(
        "--set-entry", type=_non_negative_int, default=None, help="experiment of a res_*.pt file (default: 0)"
    )
    foreign.add_argument(
        "--set-factor", type=_positive_int, default=None, help="multi-formation factor of an idc/tensor file"
    )
    foreign.add_argument(
        "--soft-labels",
        choices=["auto", "probs", "logits"],
        default="auto",
        help="how 2-D labels are read: auto (must be probabilities), probs, logits (softmax)",
    )
    parser.add_argument(
        "--test-per-class",
        type=_positive_int,
        default=None,
        help="test on the first N test images of each class only (default: all)",
    )
    parser.add_argument("--data-root", default="data/cifar10", help="CIFAR-10 folder (default: %(default)s)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/eval/<set names joined by '+'>)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda:0', ...")
    parser.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="fp32",
        help="arithmetic of the models' training and test forward passes: fp32 (the default); bf16: under "
        "torch.autocast to bfloat16 (experimental), parameters, optimiser state and images stay float32; tf32: "
        "TensorFloat-32 matmuls and convolutions, CUDA only. Recorded in the settings: a folder holds one precision",
    )
    parser.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")
    return parser


def build_random_parser() -> argparse.ArgumentParser:
    """The parser of the baseline command (``python -m hmdc_modules.evaluate random ...``)."""
    parser = argparse.ArgumentParser(
        prog="python -m hmdc_modules.evaluate random",
        description="Write the 'Random' baseline: IPC real CIFAR-10 training images per class, drawn with SEED, "
        "as a run folder (OUT/synthetic.pt) that the evaluation reads like any condensed set.",
    )
    parser.add_argument("--ipc", type=_positive_int, default=1, help="images per class (default: %(default)s)")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the draw (default: %(default)s)")
    parser.add_argument(
        "--classes", type=_class_list, default=None, help="class indices or names, e.g. 0,1,2 or cat,dog (default: all)"
    )
    parser.add_argument("--data-root", default="data/cifar10", help="CIFAR-10 folder (default: %(default)s)")
    parser.add_argument(
        "--subset",
        choices=["all", "C", "P"],
        default="all",
        help="draw from all of CIFAR-10 train or from the C/P half of the fixed split (protocol v2: C)",
    )
    parser.add_argument("--out", default=None, help="run folder or .pt file (default: runs/random_ipc<IPC>_seed<SEED>)")
    parser.add_argument("--overwrite", action="store_true", help="replace a set file that already exists at --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar while reading the images")
    return parser


# ----------------------------------------------------------------------------------------------------------------
# Building the records
# ----------------------------------------------------------------------------------------------------------------


def _per_set(parser: argparse.ArgumentParser, args: argparse.Namespace, option: str) -> list[str | None]:
    values = getattr(args, option)
    if values is None:
        return [None] * len(args.sets)
    if len(values) != len(args.sets):
        parser.error(f"--{option} must be given once per set: {len(args.sets)} sets but {len(values)} {option}s")
    return values


def _model_specs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[ModelSpec]:
    from hmdc_modules.evaluation.pool import (
        PAPER_FT_POOL,
        PAPER_POOL,
        PRETRAINED_IMAGE_SIZE,
        model_family,
        parse_model_entry,
    )
    from hmdc_modules.evaluation.records import ModelSpec

    entries: list[dict[str, Any]] = []
    for part in args.models.split(","):
        part = part.strip()
        if part == _PAPER_ALIAS:
            entries.extend(parse_model_entry(name) for name in PAPER_POOL)
        elif part == _PAPER_FT_ALIAS:
            entries.extend(parse_model_entry(name) for name in PAPER_FT_POOL)
        elif part:
            entries.append(parse_model_entry(part))
    if not entries:
        parser.error(f"--models must name at least one model, got {args.models!r}")
    labels = [entry.get("label", entry["name"]) for entry in entries]
    for option, pairs in (("--lr", args.lr), ("--weights", args.weights)):
        given = [name for name, _ in pairs]
        unknown = sorted(set(given) - set(labels))
        if unknown:
            parser.error(f"{option} names models that are not in --models: {unknown} (models: {labels})")
        repeated = sorted({name for name in given if given.count(name) > 1})
        if repeated:
            parser.error(f"{option} is given more than once for {repeated}")
    rates, weights = dict(args.lr), dict(args.weights)
    specs = []
    for entry, label in zip(entries, labels, strict=True):
        name = entry["name"]
        family = model_family(name)
        file = weights.get(label, entry.get("weights"))
        if label in weights and "pretrained" in entry:
            parser.error(f"--weights gives a file to {label}, which names hub weights; drop one of them")
        image_size, patch_size = args.image_size, args.patch_size if family == "vit" else None
        if image_size is None:
            image_size = PRETRAINED_IMAGE_SIZE if "pretrained" in entry else _recorded(file, "image_size") or 32
        if family == "vit" and patch_size is None and args.image_size is None:
            patch_size = _recorded(file, "patch_size")
        specs.append(
            ModelSpec(
                name,
                lr=rates.get(label),
                weights=file,
                pretrained=entry.get("pretrained"),
                image_size=image_size,
                patch_size=patch_size,
                width=args.convnet_width if name.lower() == "convnet" else None,
                label=entry.get("label"),
            )
        )
    return specs


def _recorded(file: str | None, field: str) -> int | None:
    """What a library weights file records about its model (``image_size``, ``patch_size``), else ``None``."""
    if file is None or not Path(file).is_file():
        return None
    from hmdc_modules.evaluation.records import weights_file_info

    info = weights_file_info(file)
    return None if info is None else getattr(info, field)


def _settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> EvalSettings:
    """The protocol's settings with every flag given applied over them."""
    from hmdc_modules.evaluation.protocols import protocol_settings

    if args.no_augment and args.augment not in (None, "none"):
        parser.error(f"--no-augment contradicts --augment {args.augment}")
    overrides: dict[str, Any] = {
        "data_root": args.data_root,
        "test_per_class": args.test_per_class,
        "precision": args.precision,
    }
    for flag in ("epochs", "eval_every", "batch_size", "momentum", "weight_decay", "lr_schedule", "lr_decay"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    for flag in ("augment", "cutmix_p", "metric"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    if args.no_augment:
        overrides["augment"] = "none"
    if args.default_lr is not None:
        overrides["lr"] = None if args.default_lr == "paper" else args.default_lr
    if args.ignore_learned_lr:
        overrides["use_learned_lr"] = False
    return protocol_settings(args.protocol, **overrides)


def _records(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[list[SetSpec], list[ModelSpec], EvalSettings, Path]:
    """The sets, models, settings and output folder the flags describe (every check that needs no rank)."""
    from hmdc_modules.evaluation.foreign import SetSource
    from hmdc_modules.evaluation.records import SetSpec

    names, groups = _per_set(parser, args, "name"), _per_set(parser, args, "group")
    source = SetSource(
        format=args.set_format,
        normalization=args.set_normalization,
        labels=args.set_labels,
        entry=args.set_entry,
        factor=args.set_factor,
        soft_labels=args.soft_labels,
    )
    sets = [
        SetSpec.from_path(path, name, group, source=source)
        for path, name, group in zip(args.sets, names, groups, strict=True)
    ]
    settings = _settings(parser, args)
    models = _model_specs(parser, args)
    out = Path(args.out) if args.out else Path("runs/eval") / "+".join(s.name for s in sets)
    return sets, models, settings, out


# ----------------------------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------------------------


def _fail(
    parser: argparse.ArgumentParser, message: str, ctx: DistributedContext | None = None, status: int = 2
) -> NoReturn:
    """Exit with ``status`` and one ``error:`` line (prefixed with the rank under ``torchrun``)."""
    where = f"[rank {ctx.rank}] " if ctx is not None and ctx.enabled else ""
    line = "; ".join(part.strip() for part in message.splitlines() if part.strip()) or "failed"
    parser.exit(status, f"{where}error: {line}\n")


def _run_random(argv: Sequence[str]) -> int:
    from hmdc_modules.evaluation.baselines import make_random_real_set

    parser = build_random_parser()
    args = parser.parse_args(argv)
    out = args.out or f"runs/random_ipc{args.ipc}_seed{args.seed}"
    try:
        path = make_random_real_set(
            args.data_root,
            out,
            ipc=args.ipc,
            seed=args.seed,
            classes=args.classes,
            progress=not args.quiet,
            overwrite=args.overwrite,
            subset=args.subset,
        )
    except _user_errors() as error:
        _fail(parser, str(error))
    print(f"wrote {path}")
    return 0


def _evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Build the records on every rank, then run the suite under
    [`run_guarded`][hmdc_modules.distributed.run_guarded] (SIGINT: 130, torchrun's SIGTERM: 143, a lost rank: 1)."""
    from hmdc_modules.distributed import any_rank, init_distributed, run_guarded, shutdown_distributed
    from hmdc_modules.evaluation.suite import run_suite

    try:
        ctx = init_distributed(args.device)  # checks the device name before any process group
    except _user_errors() as error:
        _fail(parser, str(error))
    status = 1  # until the job has run on this rank
    try:
        failure: Exception | None = None
        try:
            sets, models, settings, out = _records(parser, args)
        except _user_errors() as error:
            failure = error
        if any_rank(failure is not None, ctx):  # a set missing on one machine stops every rank
            raise failure or ValueError("another rank could not read the arguments (see its error line)")
        reports: list[Any] = []

        def job() -> None:
            reports.append(run_suite(sets, models, args.seeds, settings, out, progress=not args.quiet, dist=ctx))

        hint = f"the finished cells are stored in {out}: run the same command again to continue"
        status = run_guarded(job, ctx, resume_hint=hint)
    except _user_errors() as error:
        _fail(parser, str(error), ctx)
    finally:
        shutdown_distributed(ctx, synchronize=status == 0)
    if status != 0:
        return status
    report = reports[0]
    if ctx.is_main:
        print(f"{report.trained} cells trained, {report.skipped} already done; reports in {out}:")
        for path in report.files.values():
            print(f"  {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (errors exit with status 2 and an ``error:`` line).

    Under ``torchrun`` every process runs this with the same arguments: the cells are split over the ranks (see
    [`run_suite`][hmdc_modules.evaluation.suite.run_suite]) and only rank 0 prints the summary. An interrupted
    run ends with one line and status 130 (SIGINT) or 143 (SIGTERM, also when ``torchrun`` stops a rank because
    another one failed); a process that loses contact with the others exits with status 1. Finished cells stay
    stored either way, and the same command continues.

    Args:
        argv: The arguments (``None``: ``sys.argv[1:]``). A first argument ``random`` selects the baseline command
            (a set folder literally named ``random`` is passed as ``./random``).

    Returns:
        0 on success, else the status above (bad input exits with status 2 instead of returning).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "random":
        return _run_random(argv[1:])
    parser = build_parser()
    return _evaluate(parser, parser.parse_args(argv))
