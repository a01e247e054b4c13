"""Cross-architecture evaluation of condensed CIFAR-10 sets (the HMDC evaluation protocol).

Evaluate sets (run folders holding synthetic.pt, or .pt files) on a pool of architectures:

    python -m hmdc_modules.evaluate runs/hmdc_cifar10 runs/random_ipc1 \\
        --models convnet,resnet18,vit_tiny_patch16_224 --seeds 3 --epochs 300 --out runs/eval/ipc1

Make the "Random" baseline (ipc real training images per class, drawn with a seed) as a run folder:

    python -m hmdc_modules.evaluate random --ipc 1 --seed 0 --out runs/random_ipc1

Pool the sets one method condensed with several seeds into one column with --group (repeat once per set):

    python -m hmdc_modules.evaluate runs/hmdc_s0 runs/hmdc_s1 runs/random_s0 runs/random_s1 \\
        --group hmdc --group hmdc --group random --group random --seeds 1 --out runs/eval/pooled

The output folder receives one JSON record per finished (set, model, seed) cell, so running the same command
again skips finished cells (an interrupted run continues; different settings for the same folder are refused), and
results.md, results.csv, results.json and accuracy.png summarising every cell of the folder. Each cell reports the
final-epoch accuracy and, separately, the best accuracy over the periodic test evaluations (the paper's metric):
mean and sample standard deviation over seeds ("n/a" with one seed), plus CNN, ViT and overall averages per set.

Spread the cells over several processes with torchrun (one per GPU, or a few on a CPU machine); the tables are the
same as one process's. Rank R trains every W-th pending cell (log lines start with [rank R]), stores each record as
it finishes, and rank 0 gathers the records and writes settings.json and the reports:

    python -m torch.distributed.run --standalone --nproc-per-node 4 -m hmdc_modules.evaluate runs/hmdc_cifar10 \\
        --models paper --seeds 3 --out runs/eval/ipc1

On several machines, start the same command on each, with the node count, this machine's node rank and where
to meet (HOST: the first machine's address, reachable from the others):

    python -m torch.distributed.run --nnodes 2 --node-rank 0 --nproc-per-node 4 \\
        --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m hmdc_modules.evaluate ...

(or --master-addr HOST --master-port 29500 in place of the two --rdzv options). Every machine needs the sets and
the CIFAR-10 test split at the given paths. Without a shared filesystem the output folder of rank 0's machine is
the evaluation's: the reports are written there, and the records trained elsewhere are copied into it; a record
left on another machine by an interrupted run is taken from there when the job is started again. An error on one
process stops all of them; finished cells stay stored, so running the same command again continues.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from hmdc_modules.distributed import DistributedContext
    from hmdc_modules.evaluation.pool import ModelSpec

__all__ = ["build_parser", "build_random_parser", "main"]

_PAPER_ALIAS = "paper"


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


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
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _class_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class indices, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The parser of the evaluation command (``python -m hmdc_modules.evaluate SET_OR_RUN ...``)."""
    from hmdc_modules.evaluation.pool import PAPER_POOL

    parser = argparse.ArgumentParser(
        prog="python -m hmdc_modules.evaluate",
        description=__doc__,
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
        help="comma-separated 'convnet' or timm names; 'paper' (the default) stands for the paper's seven: "
        + ", ".join(PAPER_POOL),
    )
    parser.add_argument(
        "--seeds",
        type=_seeds,
        default=[0, 1, 2],
        help="a count N (seeds 0..N-1) or a list like 158,159,700 (default: 3)",
    )
    parser.add_argument(
        "--epochs", type=_positive_int, default=2000, help="training epochs (default: %(default)s, the paper's)"
    )
    parser.add_argument(
        "--eval-every",
        type=_non_negative_int,
        default=10,
        help="test every K epochs, and after the last one; 0: only after the last (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=_positive_int, default=128, help="training batch (default: %(default)s)")
    parser.add_argument(
        "--lr",
        type=_assignment,
        action="append",
        default=[],
        metavar="NAME=LR",
        help="learning rate of one model (repeatable); default per model: ConvNet 1e-2, ResNet18/50 1e-3, "
        "ResNet101 1e-4, ViT-Tiny/Small 1e-3, ViT-Base 1e-4, others 1e-3",
    )
    parser.add_argument(
        "--weights",
        type=_assignment,
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="start model NAME from this local weights file (repeatable); default: from scratch, nothing downloaded",
    )
    parser.add_argument(
        "--image-size", type=_positive_int, default=32, help="input side the models see (default: %(default)s)"
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
    parser.add_argument("--no-augment", action="store_true", help="train without the differentiable augmentation")
    parser.add_argument(
        "--cutmix-p", type=float, default=0.5, help="cutmix probability for non-ViT models; 0 disables (default: 0.5)"
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
    parser.add_argument("--classes", type=_class_list, default=None, help="class indices, e.g. 0,1,2 (default: all)")
    parser.add_argument("--data-root", default="data/cifar10", help="CIFAR-10 folder (default: %(default)s)")
    parser.add_argument("--out", default=None, help="run folder or .pt file (default: runs/random_ipc<IPC>_seed<SEED>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar while reading the images")
    return parser


def _run_random(argv: Sequence[str]) -> int:
    from hmdc_modules.evaluation.baselines import make_random_real_set

    parser = build_random_parser()
    args = parser.parse_args(argv)
    out = args.out or f"runs/random_ipc{args.ipc}_seed{args.seed}"
    try:
        path = make_random_real_set(
            args.data_root, out, ipc=args.ipc, seed=args.seed, classes=args.classes, progress=not args.quiet
        )
    except (FileNotFoundError, ValueError, TypeError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"wrote {path}")
    return 0


def _model_specs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[ModelSpec]:
    from hmdc_modules.evaluation.pool import PAPER_POOL, ModelSpec, model_family

    names: list[str] = []
    for part in args.models.split(","):
        part = part.strip()
        if part == _PAPER_ALIAS:
            names.extend(PAPER_POOL)
        elif part:
            names.append(part)
    if not names:
        parser.error(f"--models must name at least one model, got {args.models!r}")
    for option, pairs in (("--lr", args.lr), ("--weights", args.weights)):
        unknown = sorted({name for name, _ in pairs} - set(names))
        if unknown:
            parser.error(f"{option} names models that are not in --models: {unknown} (models: {names})")
    rates: dict[str, float] = {}
    for name, text in args.lr:
        try:
            rates[name] = float(text)
        except ValueError:
            parser.error(f"--lr {name}={text}: the learning rate must be a number")
    weights = dict(args.weights)
    specs = []
    for name in names:
        family = model_family(name)
        specs.append(
            ModelSpec(
                name,
                lr=rates.get(name),
                weights=weights.get(name),
                image_size=args.image_size,
                patch_size=args.patch_size if family == "vit" else None,
                width=args.convnet_width if name.lower() == "convnet" else None,
            )
        )
    return specs


def _exit_error(
    parser: argparse.ArgumentParser, ctx: DistributedContext | None, message: str, status: int = 2
) -> NoReturn:
    """Exit with ``status`` and an ``error:`` line (prefixed with the rank under ``torchrun``)."""
    where = f"[rank {ctx.rank}] " if ctx is not None and ctx.enabled else ""
    parser.exit(status, f"{where}error: {message}\n")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (errors exit with status 2 and an ``error:`` line).

    Under ``torchrun`` every process runs this with the same arguments: the cells are split over the ranks (see
    [`run_suite`][hmdc_modules.evaluation.runner.run_suite]) and only rank 0 prints the summary. A process that
    loses contact with the others, or that the launcher stops because another one failed, exits with status 1.

    Args:
        argv: The arguments (``None``: ``sys.argv[1:]``). A first argument ``random`` selects the baseline command
            (a set folder literally named ``random`` is passed as ``./random``).

    Returns:
        0 on success.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "random":
        return _run_random(argv[1:])

    import torch
    import torch.distributed

    from hmdc_modules.distributed import any_rank, init_distributed, shutdown_distributed
    from hmdc_modules.evaluation.cells import SetSpec
    from hmdc_modules.evaluation.runner import run_suite
    from hmdc_modules.evaluation.training import EvalSettings

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.name is not None and len(args.name) != len(args.sets):
        parser.error(f"--name must be given once per set: {len(args.sets)} sets but {len(args.name)} names")
    if args.group is not None and len(args.group) != len(args.sets):
        parser.error(f"--group must be given once per set: {len(args.sets)} sets but {len(args.group)} groups")
    try:
        ctx = init_distributed(args.device)  # checks the device name before any process group
    except (ValueError, TypeError) as error:
        _exit_error(parser, None, str(error))
    out = Path(args.out) if args.out else None
    previous_handler = None
    if ctx.enabled:

        def on_sigterm(signum: int, frame: Any) -> None:  # torchrun stops the other ranks when one fails
            raise SystemExit(
                f"[rank {ctx.rank}] error: stopped by the launcher (another process of the job ended); the finished "
                f"cells are stored in {out or 'the output folder'}: run the same command again to continue"
            )

        previous_handler = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        failure: Exception | None = None
        try:
            names = args.name or [None] * len(args.sets)
            groups = args.group or [None] * len(args.sets)
            sets = [
                SetSpec.from_path(path, name, group) for path, name, group in zip(args.sets, names, groups, strict=True)
            ]
            models = _model_specs(args, parser)
            settings = EvalSettings(
                epochs=args.epochs,
                eval_every=args.eval_every,
                batch_size=args.batch_size,
                augment=not args.no_augment,
                cutmix_p=args.cutmix_p,
                data_root=args.data_root,
                test_per_class=args.test_per_class,
            )
            out = out or Path("runs/eval") / "+".join(s.name for s in sets)
        except (FileNotFoundError, ValueError, TypeError) as error:
            failure = error
        if any_rank(failure is not None, ctx):  # a set missing on one machine stops every rank
            raise failure or ValueError("another rank could not read the arguments (see its error line)")
        report = run_suite(sets, models, args.seeds, settings, out, progress=not args.quiet, dist=ctx)
    except (FileNotFoundError, ValueError, TypeError) as error:
        _exit_error(parser, ctx, str(error))
    except torch.distributed.DistError as error:  # a peer died: its socket closed under a collective
        _exit_error(
            parser,
            ctx,
            f"lost contact with another process ({_first_line(error)}); the finished cells are stored in {out}: run "
            "the same command again to continue",
            status=1,
        )
    finally:
        shutdown_distributed(ctx)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    if ctx.is_main:
        print(f"{report.trained} cells trained, {report.skipped} already done; reports in {out}:")
        for path in report.files.values():
            print(f"  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
