"""Cross-check the evaluation suite against DD-Ranking on one fixed set, side by side.

The set: 10 random real CIFAR-10 training images a class, seed 0 (the library's ``random`` baseline, read from the
repository's data/cifar10 copy). Both sides train ConvNet-3 on it for ``--epochs`` epochs (100), with 3 training
seeds (0, 1, 2), on one CPU thread, and test on the same 10,000 test images (the same tensors: the library exports
them for DD-Ranking, so both sides see identical pixels):

- DD-Ranking 0.2.0, in its own virtual environment (it pins numpy<2), through
  ``LabelRobustScoreHard._compute_hard_label_metrics``: its ConvNet-3, its DSA (one op per batch), SGD 0.01 with
  momentum 0.9 and weight decay 5e-4, ``StepLR(step_size=epochs/2)``, batch 128. Its dataset loader is replaced by
  the exported tensors (it would download CIFAR-10), the learning rate is fixed at 0.01 (without one it searches 5
  rates and keeps the best), and its test interval (10 epochs) is set to ``--test-every``;
- the library with ``--protocol ddranking --lr-schedule step:<epochs/2> --eval-every <test-every>``;
- the library with ``--protocol dsa`` (its ``half`` schedule decays at epochs/2 too; tested after the last epoch).

``--test-every`` defaults to the number of epochs: one test, after the last epoch, so the columns compare final
accuracies (a test of ConvNet-3 on 10,000 images costs about a minute on one CPU thread; ``--test-every 10`` gives
DD-Ranking's best-of-tests metric as well). The three sides run as three concurrent one-thread processes.

Usage (from the repository root; the venv is created under build/ if asked)::

    python scripts/ddranking_crosscheck.py --setup-venv          # once: build/ddranking-venv + pip install ddranking
    OMP_NUM_THREADS=1 python scripts/ddranking_crosscheck.py     # the side-by-side table

The internal ``--worker`` mode is what the venv's Python runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DDRANKING = "ddranking==0.2.0"
DSA_PARAMS = {  # DD-Ranking's configs/Demo_LRS_Hard_Label.yaml aug_params (DSA's ParamDiffAug values)
    "flip": 0.5,
    "rotate": 15.0,
    "saturation": 2.0,
    "brightness": 1.0,
    "contrast": 0.5,
    "scale": 1.2,
    "crop": 0.125,
    "cutout": 0.5,
}


def _worker(shared: Path, out: Path, epochs: int, seeds: list[int], test_every: int) -> None:
    """Run DD-Ranking's hard-label training on the exported tensors (inside DD-Ranking's venv)."""
    import torch

    torch.set_num_threads(1)
    import ddranking
    import ddranking.metrics.hard_label as hard_label
    from ddranking.utils import TensorDataset, set_seed

    data = torch.load(shared, weights_only=True)
    images, labels = data["images"], data["labels"]
    test = TensorDataset(data["test_images"], data["test_labels"])
    mean, std = data["mean"], data["std"]

    def exported_dataset(dataset, data_path, im_size, use_zca, custom_val_trans, device):
        # (channel, im_size, mean, std, num_classes, dst_train, dst_test_real, dst_test_syn, class_map, inverse)
        identity = {c: c for c in range(10)}
        return 3, (32, 32), mean, std, 10, TensorDataset(images, labels), test, test, identity, identity

    tests: list[float] = []
    original_validate = hard_label.validate

    def recording_validate(*args, **kwargs):
        accuracy = original_validate(*args, **kwargs)
        tests.append(float(accuracy))
        return accuracy

    hard_label.get_dataset = exported_dataset
    hard_label.validate = recording_validate
    metric = hard_label.LabelRobustScoreHard(
        dataset="CIFAR10",
        real_data_path=str(shared.parent),
        ipc=int(images.shape[0]) // 10,
        model_name="ConvNet-3",
        data_aug_func="dsa",
        aug_params=dict(DSA_PARAMS),
        optimizer="sgd",
        lr_scheduler="step",
        step_size=epochs // 2,
        weight_decay=0.0005,
        momentum=0.9,
        num_eval=1,
        im_size=(32, 32),
        num_epochs=epochs,
        real_batch_size=256,
        syn_batch_size=128,
        num_workers=0,
        device="cpu",
        dist=False,
        save_path=str(out.parent / "ddranking_scores.csv"),
    )
    metric.test_interval = test_every  # DD-Ranking tests when (epoch + 1) % test_interval == 0
    rows = []
    for seed in seeds:
        tests.clear()
        set_seed(seed)
        started = time.perf_counter()
        best, _ = metric._compute_hard_label_metrics_helper(
            image_tensor=images, image_path=None, hard_labels=labels, lr=0.01, mode="syn"
        )
        rows.append({"seed": seed, "best": float(best), "final": tests[-1], "seconds": time.perf_counter() - started})
        print(f"DD-Ranking seed {seed}: best {best:.2f}, final {tests[-1]:.2f}", flush=True)
    versions = {"ddranking": getattr(ddranking, "__version__", DDRANKING), "torch": torch.__version__}
    out.write_text(json.dumps({"rows": rows, "versions": versions}, indent=2))


def _export(set_dir: Path, data_root: str, shared: Path) -> None:
    """The set (decoded, normalised) and the whole test split normalised the same way, as plain tensors."""
    import torch

    from hmdc_modules.condensation import decode_formation, load_cifar10, normalize
    from hmdc_modules.evaluation import read_set

    stored, _ = read_set(set_dir / "synthetic.pt")
    test_images, test_labels = load_cifar10(data_root, "test", progress=False)
    payload = {
        "images": decode_formation(stored.images, stored.factor).float().contiguous(),
        "labels": stored.labels.long(),
        "test_images": normalize(test_images, stored.mean, stored.std).float().contiguous(),
        "test_labels": test_labels.long(),
        "mean": list(stored.mean),
        "std": list(stored.std),
    }
    torch.save(payload, shared)


def _library_command(set_dir: Path, out: Path, protocol: str, epochs: int, seeds: list[int], extra: list[str]) -> list:
    return [
        sys.executable, "-m", "hmdc_modules.evaluate", str(set_dir), "--protocol", protocol, "--epochs", str(epochs),
        "--models", "convnet", "--seeds", ",".join(map(str, seeds)) + ("," if len(seeds) == 1 else ""),
        "--device", "cpu", "--quiet", *extra, "--out", str(out),
    ]  # fmt: skip


def _library_rows(out: Path) -> list[dict]:
    from hmdc_modules.evaluation import load_results

    results = sorted(load_results(out), key=lambda r: r.seed)
    return [{"seed": r.seed, "best": r.best_accuracy, "final": r.final_accuracy, "seconds": r.seconds} for r in results]


def _summary(rows: list[dict], key: str) -> str:
    values = [row[key] for row in rows]
    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):6.2f} ± {spread:4.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--test-every", type=int, default=None, help="test interval (default: --epochs: final only)")
    parser.add_argument("--data-root", default="data/cifar10")
    parser.add_argument("--work", default="build/crosscheck", help="working folder (default: %(default)s)")
    parser.add_argument("--venv", default="build/ddranking-venv", help="DD-Ranking's venv (default: %(default)s)")
    parser.add_argument("--setup-venv", action="store_true", help="create the venv and pip install ddranking")
    parser.add_argument("--worker", nargs=2, metavar=("SHARED", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.epochs < 2 or args.epochs % 2:
        parser.error(f"--epochs must be an even number >= 2 (the schedules decay at half), got {args.epochs}")
    test_every = args.test_every or args.epochs
    if args.worker:
        _worker(Path(args.worker[0]), Path(args.worker[1]), args.epochs, seeds, test_every)
        return 0

    venv_python = Path(args.venv) / "bin" / "python"
    if args.setup_venv:
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", args.venv], check=True)
        subprocess.run([str(venv_python), "-m", "pip", "install", DDRANKING], check=True)
        return 0
    found = venv_python.is_file()
    probe = subprocess.run([str(venv_python), "-c", "import ddranking"], capture_output=True) if found else None
    if probe is None or probe.returncode != 0:
        print(
            f"error: DD-Ranking is not installed in {args.venv}; run: python {sys.argv[0]} --setup-venv "
            f"(it creates the venv with the system's torch and pip-installs {DDRANKING}, which pins numpy<2)",
            file=sys.stderr,
        )
        return 2

    from hmdc_modules.evaluation import make_random_real_set

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    set_dir = work / "random_ipc10_seed0"
    if not (set_dir / "synthetic.pt").is_file():
        make_random_real_set(args.data_root, set_dir, ipc=10, seed=0, progress=False)
    shared = work / "shared.pt"
    _export(set_dir, args.data_root, shared)

    ddr_out = work / f"ddranking_e{args.epochs}_t{test_every}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    half = str(args.epochs // 2)
    commands = {
        "DD-Ranking 0.2.0 (hard label, lr 0.01)": [
            str(venv_python), __file__, "--worker", str(shared), str(ddr_out), "--epochs", str(args.epochs),
            "--seeds", args.seeds, "--test-every", str(test_every),
        ],
        f"library --protocol ddranking --lr-schedule step:{half}": _library_command(
            set_dir, work / f"lib_ddranking_e{args.epochs}_t{test_every}", "ddranking", args.epochs, seeds,
            ["--lr-schedule", f"step:{half}", "--eval-every", str(test_every)],
        ),
        "library --protocol dsa": _library_command(
            set_dir, work / f"lib_dsa_e{args.epochs}", "dsa", args.epochs, seeds, []
        ),
    }  # fmt: skip
    started = time.perf_counter()
    running = {label: subprocess.Popen(command, env=env) for label, command in commands.items()}
    timing: dict[str, float] = {}
    for label, process in running.items():
        if process.wait() != 0:
            print(f"error: {label} failed with status {process.returncode}", file=sys.stderr)
            return 1
        timing[label] = time.perf_counter() - started
    ddr = json.loads(ddr_out.read_text())
    sides = {}
    for label, command in commands.items():
        sides[label] = ddr["rows"] if label.startswith("DD-Ranking") else _library_rows(Path(command[-1]))

    print(
        f"\nConvNet-3, 10 random real CIFAR-10 images a class (seed 0), {args.epochs} epochs, seeds {args.seeds}, "
        f"1 thread each, tested every {test_every} epochs"
    )
    print(f"DD-Ranking side: {ddr['versions']}")
    print(f"{'':58} {'final (mean ± std)':>20} {'best of the tests':>20}   per seed (final)")
    for label, rows in sides.items():
        per_seed = ", ".join(f"{row['final']:.2f}" for row in rows)
        print(f"{label:58} {_summary(rows, 'final'):>20} {_summary(rows, 'best'):>20}   {per_seed}")
    print("wall time (concurrent): " + ", ".join(f"{k}: {v:.0f} s" for k, v in timing.items()))
    (work / "crosscheck.json").write_text(json.dumps({"sides": sides, "timing": timing}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
