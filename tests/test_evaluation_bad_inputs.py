"""Bad inputs to ``python -m hmdc_modules.evaluate`` and to the evaluation's public functions.

Each one is refused with one clear line: a ``ValueError``/``TypeError`` (``FileNotFoundError`` for a missing file)
naming the argument from a function; exit status 2, no traceback and one ``error:`` line (after argparse's usage
line for a malformed flag) from the command line. Nothing is written where a run would replace a user's file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hmdc_modules.evaluate import main
from hmdc_modules.evaluation import (
    Cell,
    CellResult,
    EvalSettings,
    ModelSpec,
    SetSpec,
    SummaryRow,
    load_results,
    make_random_real_set,
    plot_accuracy_bars,
    read_set,
    run_cell,
    run_suite,
    write_reports,
)

TINY = ["--models", "convnet", "--convnet-width", "8", "--epochs", "1", "--eval-every", "0", "--seeds", "1"]


@pytest.fixture(scope="module")
def good_set(fake_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    make_random_real_set(fake_cifar, folder, ipc=2, seed=0, progress=False)
    return folder


@pytest.fixture(scope="module")
def bad_files(good_set: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    data = (good_set / "synthetic.pt").read_bytes()
    files = {"garbage": root / "garbage.pt", "truncated": root / "truncated.pt", "foreign": root / "foreign.pt"}
    files["garbage"].write_bytes(bytes(range(256)) * 8)
    files["truncated"].write_bytes(data[: len(data) // 2])
    torch.save({"weights": torch.zeros(2)}, files["foreign"])
    files["empty_folder"] = root / "empty_folder"
    files["empty_folder"].mkdir()
    files["a_file"] = root / "a_file"
    files["a_file"].write_text("not a folder")
    return files


def cli_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run the command, expect exit status 2 and one error line without a traceback; return that line."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert sum("error:" in line for line in lines) == 1 and "error:" in lines[-1], err
    if not err.startswith("usage:"):  # not an argparse error: the error line is all there is
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[-1]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# (label, argv after the set, what the error line must say); "{set}" is the good set, "{name}" a bad file
CLI_CASES = [
    ("missing set", ["{root}/no_such_run"], "neither a synthetic-set file nor a run folder"),
    ("folder without a set", ["{empty_folder}"], "without 'synthetic.pt'"),
    ("garbage set file", ["{garbage}"], "garbage.pt"),
    ("truncated set file", ["{truncated}"], "truncated.pt"),
    ("foreign .pt file", ["{foreign}"], "foreign.pt"),
    ("unknown model", ["{set}", "--models", "nonet"], "timm model name, got 'nonet'"),
    ("no model", ["{set}", "--models", " , "], "--models must name at least one model"),
    ("repeated model", ["{set}", "--models", "convnet,convnet"], "model labels must be unique"),
    ("seed count 0", ["{set}", "--seeds", "0"], "seed count must be >= 1"),
    ("seeds not numbers", ["{set}", "--seeds", "a,b"], "comma-separated seed list"),
    ("repeated seeds", ["{set}", "--seeds", "1,1"], "distinct integers"),
    ("negative seed", ["{set}", "--seeds=-1,2"], "distinct integers >= 0"),
    ("zero epochs", ["{set}", "--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0"),
    ("epochs not a number", ["{set}", "--epochs", "ten"], "argument --epochs: expected an integer, got 'ten'"),
    ("negative eval-every", ["{set}", "--eval-every=-1"], "argument --eval-every: expected an integer >= 0"),
    ("zero batch", ["{set}", "--batch-size", "0"], "argument --batch-size"),
    ("lr not a number", ["{set}", "--lr", "convnet=fast"], "with a number LR, got 'convnet=fast'"),
    ("negative lr", ["{set}", "--lr=convnet=-0.1"], "finite number > 0"),
    ("nan lr", ["{set}", "--lr", "convnet=nan"], "finite number > 0"),
    ("lr without a name", ["{set}", "--lr", "0.1"], "expected NAME=VALUE"),
    ("lr of a model not run", ["{set}", "--models", "convnet", "--lr", "resnet18=0.1"], "not in --models"),
    ("lr twice", ["{set}", "--models", "convnet", "--lr", "convnet=0.1", "--lr", "convnet=0.2"], "more than once"),
    ("missing weights", ["{set}", "--models", "convnet", "--weights", "convnet={root}/w.pt"], "no weights file"),
    ("cutmix above 1", ["{set}", "--cutmix-p", "2"], "argument --cutmix-p: expected a probability in [0, 1]"),
    ("cutmix nan", ["{set}", "--cutmix-p", "nan"], "expected a probability"),
    ("zero test images", ["{set}", "--test-per-class", "0"], "argument --test-per-class"),
    ("zero image size", ["{set}", "--image-size", "0"], "argument --image-size"),
    ("zero ConvNet width", ["{set}", "--convnet-width", "0"], "argument --convnet-width"),
    ("zero patch size", ["{set}", "--patch-size", "0"], "argument --patch-size"),
    ("names per set", ["{set}", "--name", "a", "--name", "b"], "--name must be given once per set"),
    ("groups per set", ["{set}", "--group", "a", "--group", "b"], "--group must be given once per set"),
    ("empty group", ["{set}", "--group", " "], "`group` must not be empty"),
    ("empty name", ["{set}", "--name", ""], "`name` must not be empty"),
    ("unknown device", ["{set}", "--device", "tpu"], "tpu"),
    ("out is a file", ["{set}", "--out", "{a_file}"], "is a file, expected an output folder"),
    ("random: zero ipc", ["random", "--ipc", "0"], "argument --ipc"),
    ("random: unknown subset", ["random", "--subset", "Q"], "argument --subset: invalid choice: 'Q'"),
    ("random: unknown class", ["random", "--classes", "foo"], "'foo' is neither a class index"),
    ("random: class out of range", ["random", "--classes", "10"], "10 is out of range"),
    ("random: repeated class", ["random", "--classes", "1,automobile"], "listed twice"),
    ("random: negative seed", ["random", "--seed=-1"], "argument --seed"),
]


@pytest.mark.parametrize(("label", "argv", "message"), CLI_CASES, ids=[case[0] for case in CLI_CASES])
def test_command_line_refuses_bad_input_in_one_line(
    label: str,
    argv: list[str],
    message: str,
    good_set: Path,
    bad_files: dict[str, Path],
    fake_cifar: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    names = {"set": good_set, "root": tmp_path, **bad_files}
    args = [part.format(**names) for part in argv]
    if args[0] == "random":
        args += ["--data-root", str(fake_cifar), "--out", str(tmp_path / "random")]
    else:
        args = [*TINY, *args] if "--models" not in args else [*TINY[2:], *args]
        args += ["--data-root", str(fake_cifar), "--quiet"]
        for option, value in (("--out", str(tmp_path / "eval")), ("--device", "cpu")):
            if option not in args:
                args += [option, value]
    line = cli_error(args, capsys)
    assert message in line, (label, line)
    assert not (tmp_path / "eval" / "cells").exists() and not (tmp_path / "random").exists()


def test_a_folder_with_other_settings_is_refused_and_left_intact(
    good_set: Path, fake_cifar: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "eval"
    common = [str(good_set), *TINY[:-4], "--data-root", str(fake_cifar), "--out", str(out), "--device", "cpu"]
    assert main([*common, "--epochs", "1", "--eval-every", "0", "--seeds", "1", "--quiet"]) == 0
    capsys.readouterr()
    before = snapshot(out)
    line = cli_error([*common, "--epochs", "2", "--eval-every", "0", "--seeds", "1", "--quiet"], capsys)
    assert "other settings (epochs: 1 -> 2)" in line
    assert snapshot(out) == before


def test_the_random_baseline_never_replaces_a_set(fake_cifar: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    make_random_real_set(fake_cifar, run, ipc=1, seed=0, progress=False)
    before = snapshot(run)
    line = cli_error(["random", "--seed", "1", "--data-root", str(fake_cifar), "--out", str(run)], capsys)
    assert "already exists" in line and "--overwrite" in line and snapshot(run) == before
    with pytest.raises(ValueError, match=r"`out`: .* already exists"):
        make_random_real_set(fake_cifar, run, ipc=1, seed=1, progress=False)
    argv = ["random", "--seed", "1", "--data-root", str(fake_cifar), "--out", str(run), "--overwrite", "--quiet"]
    assert main(argv) == 0 and snapshot(run) != before


# ----------------------------------------------------------------------------------------------------------------
# The functions
# ----------------------------------------------------------------------------------------------------------------


def test_functions_refuse_bad_input_naming_the_argument(
    good_set: Path, bad_files: dict[str, Path], fake_cifar: Path, tmp_path: Path
) -> None:
    settings = EvalSettings(epochs=1, eval_every=0, batch_size=8, data_root=str(fake_cifar))
    cnn = ModelSpec("convnet", width=8)
    cell = Cell(SetSpec.from_path(good_set), cnn, 0)
    with pytest.raises(TypeError, match="`sets` must be a list"):
        run_suite(str(good_set), [cnn], [0], settings, tmp_path / "o", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`models` must not be empty"):
        run_suite([good_set], [], [0], settings, tmp_path / "o", progress=False)
    with pytest.raises(TypeError, match="`out` must be a str or path"):
        run_suite([good_set], [cnn], [0], settings, 3, progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`seeds` must be an int"):
        run_suite([good_set], [cnn], ["0"], settings, tmp_path / "o", progress=False)  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"foreign\.pt"):
        run_suite([bad_files["foreign"]], [cnn], [0], settings, tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()  # refused before the folder was made
    with pytest.raises(TypeError, match="`cell` must be a Cell"):
        run_cell("cell", settings)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`test_set` must be an \\(images, labels\\) tuple"):
        run_cell(cell, settings, test_set=torch.zeros(2, 3, 32, 32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`test_set`: 2 images but 3 labels"):
        run_cell(cell, settings, test_set=(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(3).long()))
    with pytest.raises(ValueError, match="outside \\[0, num_classes=1\\)"):
        run_cell(cell, EvalSettings(epochs=1, num_classes=1, data_root=str(fake_cifar)))
    with pytest.raises(TypeError, match="`path` must be a str or path"):
        read_set(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"garbage\.pt"):
        read_set(bad_files["garbage"])
    with pytest.raises(ValueError, match="`results` must hold at least one CellResult"):
        write_reports([], tmp_path / "r")
    with pytest.raises(TypeError, match="`settings` must be an EvalSettings or None"):
        write_reports([], tmp_path / "r", settings={"epochs": 1})  # type: ignore[arg-type]
    row = SummaryRow("a", "convnet", "model", "cnn", 1, 2, 1, 48.0, 1.0, 50.0, 2.0)
    with pytest.raises(ValueError, match="`metrics` must be a non-empty tuple"):
        plot_accuracy_bars([row], tmp_path / "c.png", metrics=("worst",))
    with pytest.raises(TypeError, match="`data` must be a dict \\(a cell result\\)"):
        CellResult.from_dict([])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown settings \\['speed'\\]"):
        EvalSettings.from_dict({"speed": 1})
    with pytest.raises(ValueError, match="must hold a 'name'"):
        ModelSpec.from_dict({"lr": 0.1})
    with pytest.raises(TypeError, match="`out` must be a str or path"):
        load_results(3)  # type: ignore[arg-type]
    (tmp_path / "store" / "cells").mkdir(parents=True)
    (tmp_path / "store" / "cells" / "x.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"x\.json' is not a cell record"):
        load_results(tmp_path / "store")
    with pytest.raises(TypeError, match="`overwrite` must be a bool"):
        make_random_real_set(fake_cifar, tmp_path / "b", overwrite="yes")  # type: ignore[arg-type]


def test_a_chart_whose_best_equals_its_final_draws_one_panel(tmp_path: Path, monkeypatch) -> None:
    from matplotlib.figure import Figure

    panels: list[list[str]] = []
    real_save = Figure.savefig

    def recording(self: Figure, *args: object, **kwargs: object) -> None:
        panels.append([ax.get_title() for ax in self.axes])
        real_save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    same = [SummaryRow("a", "convnet", "model", "cnn", 1, 2, 1, 48.0, 1.0, 48.0, 1.0)]
    differ = [SummaryRow("a", "convnet", "model", "cnn", 1, 2, 1, 48.0, 1.0, 50.0, 2.0)]
    plot_accuracy_bars(same, tmp_path / "same.png")
    plot_accuracy_bars(differ, tmp_path / "differ.png")
    assert len(panels[0]) == 1 and "equal to the best" in panels[0][0]
    assert len(panels[1]) == 2 and "picks the epoch on the test set" in panels[1][0]
    assert all("paper's metric" not in title or "test set" in title for titles in panels for title in titles)
