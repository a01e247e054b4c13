"""Where one outer iteration of examples/hmdc_cifar10.py spends its wall time.

    python benchmarks/run_profile.py                                  # the cpu preset, one outer iteration
    python benchmarks/run_profile.py --json runs/profile/cpu.json -- --classes 0,1 --inner-steps 4

Everything after ``--`` (or any flag this script does not know) goes to the example; ``--iterations 1``, ``--quiet``
and ``--overwrite`` come first, so the run is one outer iteration in ``--out`` (default ``runs/profile/run``).
The example runs unchanged, in this process: its functions (and a few of the kit's) are wrapped with wall-clock
timers whose times are *exclusive* (a call's time less that of the timed calls inside it), so the rows add up:

- class-steps: ``HMDCObjective.step`` (the losses and the backward pass to the images, augmentation's backward
  included);
- image update, rest: ``normalize_image_gradients`` and the image optimiser's step (the SGD over the 5-d image
  tensor);
- model training: ``HMDCObjective.training_loss``, the backward pass of its loss and the models' SGD steps;
- projection training: ``HMDCObjective.alignment_loss``, the backward pass of its loss and the Adam steps;
- real-sample selection: the kit's ``embed`` and ``select_representatives`` (embedding a class's real images,
  k-means);
- augmentation and decoding: ``DifferentiableAugment``, ``cutmix`` and ``decode_formation`` forward passes;
- networks rebuilt: ``create_model``, ``auto_adapter`` and ``SpatialSemanticDecomposer`` construction;
- checkpoint and artefact I/O: the synthetic set, grid, plots, metrics and checkpoint writers;
- everything else: the outer iteration's wall time less all of the above.

Only the library's public functions (and torch's optimisers) are wrapped: the example is run as a program
(``runpy``, as ``__main__``), never imported, so nothing here depends on its private functions. The outer iteration
starts when the run builds its ``DifferentiableAugment``, right before its outer loop.
Setup before the outer iteration (reading the data, the initial images, the first artefacts) is timed apart and left
out of the table. The table goes to stdout, every figure to ``--json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import runpy
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "hmdc_cifar10.py"
ROWS = (
    "class-steps",
    "image update, rest",
    "model training",
    "projection training",
    "real-sample selection",
    "augmentation and decoding",
    "networks rebuilt",
    "checkpoint and artefact I/O",
)


class Profile:
    """Exclusive wall-clock time per category, over the window that ``start`` opens."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[float] = []
        self.started: float | None = None
        self.setup_s = 0.0

    def start(self) -> None:
        """Open the window: what was timed so far is setup."""
        now = time.perf_counter()
        self.setup_s = now - self._t0
        self.seconds.clear()
        self.calls.clear()
        self.started = now

    def begin(self) -> None:
        self._t0 = time.perf_counter()

    def wrap(self, category: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            self._stack.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed, inner = time.perf_counter() - t0, self._stack.pop()
                self.seconds[category] += elapsed - inner
                self.calls[category] += 1
                if self._stack:
                    self._stack[-1] += elapsed

        return timed


def instrument(profile: Profile) -> Callable[[], None]:
    """Wrap the library's functions and torch's optimiser steps; returns the function that undoes it."""
    import hmdc_modules
    import hmdc_modules.functional
    from hmdc_modules import condensation as kit
    from hmdc_modules.condensation.run_folder import RunFolder
    from hmdc_modules.objective import HMDCObjective

    undo: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, category: str) -> None:
        original = getattr(owner, name)
        undo.append((owner, name, original))
        setattr(owner, name, profile.wrap(category, original))

    patch(HMDCObjective, "step", "class-steps")
    patch(hmdc_modules.functional, "normalize_image_gradients", "image update, rest")
    patch(kit, "embed", "real-sample selection")
    patch(kit, "select_representatives", "real-sample selection")
    patch(kit.DifferentiableAugment, "forward", "augmentation and decoding")
    patch(kit, "cutmix", "augmentation and decoding")
    patch(kit, "decode_formation", "augmentation and decoding")
    patch(kit, "create_model", "networks rebuilt")
    patch(hmdc_modules, "auto_adapter", "networks rebuilt")
    for name in ("save_synthetic_set", "save_image_grid", "plot_metrics", "plot_balancer_history"):
        patch(kit, name, "checkpoint and artefact I/O")
    patch(RunFolder, "save_checkpoint", "checkpoint and artefact I/O")
    patch(RunFolder, "write_metrics", "checkpoint and artefact I/O")
    patch(torch.optim.Adam, "step", "projection training")
    patch(torch.optim.Adam, "zero_grad", "projection training")

    sgd_step = torch.optim.SGD.step

    def sgd(self: torch.optim.SGD, *args: Any, **kwargs: Any) -> Any:  # the images are the one 5-d parameter
        images = any(p.dim() == 5 for group in self.param_groups for p in group["params"])
        return profile.wrap("image update, rest" if images else "model training", sgd_step)(self, *args, **kwargs)

    undo.append((torch.optim.SGD, "step", sgd_step))
    torch.optim.SGD.step = sgd  # type: ignore[method-assign]

    def tagged(name: str, category: str) -> None:  # the loss remembers its category for its backward pass
        original = getattr(HMDCObjective, name)

        def loss_fn(self: HMDCObjective, *args: Any, **kwargs: Any) -> torch.Tensor:
            loss = original(self, *args, **kwargs)
            loss._profile_category = category  # type: ignore[attr-defined]
            return loss

        undo.append((HMDCObjective, name, original))
        setattr(HMDCObjective, name, profile.wrap(category, loss_fn))

    tagged("alignment_loss", "projection training")
    tagged("training_loss", "model training")
    backward = torch.Tensor.backward

    def tensor_backward(self: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        category = getattr(self, "_profile_category", None)
        if category is None:
            return backward(self, *args, **kwargs)
        return profile.wrap(category, backward)(self, *args, **kwargs)

    undo.append((torch.Tensor, "backward", backward))
    torch.Tensor.backward = tensor_backward  # type: ignore[method-assign]

    augment_init = kit.DifferentiableAugment.__init__

    def open_window(self: Any, *args: Any, **kwargs: Any) -> None:  # built once, right before the outer loop
        profile.start()
        augment_init(self, *args, **kwargs)

    undo.append((kit.DifferentiableAugment, "__init__", augment_init))
    kit.DifferentiableAugment.__init__ = open_window  # type: ignore[method-assign]
    patch(hmdc_modules.SpatialSemanticDecomposer, "__init__", "networks rebuilt")

    def restore() -> None:
        for owner, name, original in reversed(undo):
            setattr(owner, name, original)

    return restore


def run_example(args: list[str]) -> int:
    """Run examples/hmdc_cifar10.py as a program with ``args``; its exit status."""
    argv = sys.argv
    sys.argv = [str(EXAMPLE), *args]
    try:
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = argv
    return 0


def profile_run(example_args: list[str]) -> dict[str, Any]:
    """Run the example for one outer iteration with ``example_args`` and return the profile's figures.

    Raises:
        RuntimeError: If the example exits with a non-zero status (its error line is on stderr).
    """
    profile = Profile()
    restore = instrument(profile)
    args = ["--iterations", "1", "--quiet", "--overwrite", "--out", "runs/profile/run", *example_args]
    try:
        profile.begin()
        code = run_example(args)
        end = time.perf_counter()
    finally:
        restore()
    if code != 0:
        raise RuntimeError(f"the example exited with status {code}")
    if profile.started is None:
        raise RuntimeError("the example ran no outer iteration (a resumed run that had finished?)")
    out = Path(args[max(i for i, a in enumerate(args) if a == "--out") + 1])  # the last --out given wins
    updates = json.loads((out / "config.json").read_text())["inner_steps"]
    total = end - profile.started
    rows = {name: profile.seconds.get(name, 0.0) for name in ROWS}
    rows["everything else"] = total - sum(rows.values())
    return {
        "args": args,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "outer_iteration_s": total,
        "setup_s": profile.setup_s,
        "image_updates": updates,
        "classes": profile.calls.get("class-steps", 0) // max(updates, 1),
        "seconds": rows,
        "calls": {name: profile.calls.get(name, 0) for name in ROWS},
        "outside_class_steps_share": 1.0 - rows["class-steps"] / total,
    }


def table(figures: dict[str, Any]) -> str:
    total, updates = figures["outer_iteration_s"], figures["image_updates"]
    lines = [
        f"one outer iteration: {total:.2f} s, {updates} image updates of {figures['classes']} classes "
        f"({total / updates:.2f} s each); {figures['threads']} threads, torch {figures['torch']}; "
        f"setup before it {figures['setup_s']:.2f} s (not in the table)",
        "| part | seconds | per image update | share | calls |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, seconds in figures["seconds"].items():
        calls = figures["calls"].get(name, "")
        lines.append(f"| {name} | {seconds:.2f} | {seconds / updates:.3f} | {100 * seconds / total:.1f}% | {calls} |")
    lines.append(f"outside the class-steps: {100 * figures['outside_class_steps_share']:.1f}% of the outer iteration")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args, rest = parser.parse_known_args(argv)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    try:
        figures = profile_run(rest)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(table(figures))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
