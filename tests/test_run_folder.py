"""The kit's run folder: refusal, start, resume settings, checkpoints with fallback, metrics CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from hmdc_modules.condensation.run_folder import RunFolder, RunFolderError, resume_settings


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_an_empty_or_foreign_folder_holds_no_run(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run", artefacts=["synthetic.pt"])
    assert not folder.holds_run()
    folder.check_new(overwrite=False)  # a folder that does not exist yet
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    assert not folder.holds_run()
    folder.check_new(overwrite=False)


@pytest.mark.parametrize("name", ["config.json", "checkpoint.pt", "checkpoint.prev.pt", "metrics.csv", "grid.png"])
def test_any_file_of_a_run_makes_the_folder_refused_without_overwrite(tmp_path: Path, name: str) -> None:
    folder = RunFolder(str(tmp_path), artefacts=["grid.png"])
    (tmp_path / name).write_bytes(b"x")
    with pytest.raises(RunFolderError, match=r"holds a run; continue it with --resume or replace it with --overwrite"):
        folder.check_new(overwrite=False)
    folder.check_new(overwrite=True)
    assert (tmp_path / name).read_bytes() == b"x"  # refusing or allowing removes nothing


def test_the_message_names_the_folder_as_given(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    given = str(tmp_path) + "/"
    with pytest.raises(RunFolderError) as caught:
        RunFolder(given).check_new(overwrite=False)
    assert str(caught.value).startswith(repr(given))


def test_start_removes_the_old_run_only_and_writes_the_config(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path, artefacts=["synthetic.pt"])
    for name in ("checkpoint.pt", "checkpoint.prev.pt", "metrics.csv", "synthetic.pt", "notes.txt"):
        (tmp_path / name).write_bytes(b"old")
    folder.start({"ipc": 10, "distance": "mse"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "notes.txt"]
    assert json.loads((tmp_path / "config.json").read_text()) == {"ipc": 10, "distance": "mse"}
    assert (tmp_path / "config.json").read_text().endswith("}\n")


def test_start_with_an_unwritable_config_removes_nothing(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.pt").write_bytes(b"old")
    with pytest.raises(TypeError, match="`config`"):
        RunFolder(tmp_path).start({"bad": object()})
    assert snapshot(tmp_path) == {"checkpoint.pt": b"old"}


def test_checkpoints_keep_the_previous_one_and_loading_falls_back(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.save_checkpoint({"config": {"ipc": 1}, "iteration": 1})
    folder.save_checkpoint({"config": {"ipc": 1}, "iteration": 2})
    loaded = folder.load_checkpoint()
    assert loaded.state["iteration"] == 2 and loaded.message is None
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    loaded = folder.load_checkpoint()
    assert loaded.state["iteration"] == 1 and loaded.path.name == "checkpoint.prev.pt"
    assert "previous checkpoint" in loaded.message
    assert folder.settings_from(loaded) == {"ipc": 1}


def test_missing_or_unreadable_checkpoints_give_one_line(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    with pytest.raises(RunFolderError, match="no checkpoint file") as caught:
        folder.load_checkpoint()
    assert "\n" not in str(caught.value)
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    (tmp_path / "checkpoint.prev.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RunFolderError, match="neither checkpoint is readable") as caught:
        folder.load_checkpoint()
    assert "\n" not in str(caught.value) and "weights_only=False" not in str(caught.value)


def test_a_checkpoint_without_settings_is_refused(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.save_checkpoint({"iteration": 3})
    with pytest.raises(RunFolderError, match="holds no settings"):
        folder.settings_from(folder.load_checkpoint())


def test_metrics_csv_has_every_column_in_first_seen_order(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path, metrics="log.csv")
    folder.write_metrics([])
    assert not (tmp_path / "log.csv").exists()
    rows = [{"step": 0, "loss": 0.1 + 0.2}, {"step": 1, "loss": 1e-7, "extra": "a,b"}]
    folder.write_metrics(rows)
    text = (tmp_path / "log.csv").read_text()
    assert text.splitlines()[:2] == ["step,loss,extra", "0,0.30000000000000004,"]  # floats round-trip exactly
    back = list(csv.DictReader(text.splitlines()))
    assert back[1] == {"step": "1", "loss": "1e-07", "extra": "a,b"}


def test_resume_settings_takes_the_checkpoints_and_names_every_clash() -> None:
    saved = {"ipc": 10, "lr": 0.005, "old_setting": 1}
    current = {"ipc": 1, "lr": 0.1, "new_setting": "x"}
    assert resume_settings(saved, current, ["out"], defaults={"new_setting": "d"}) == {
        "ipc": 10,
        "lr": 0.005,
        "new_setting": "d",
    }
    assert resume_settings(saved, current, [])["new_setting"] == "x"  # no defaults: the current value
    with pytest.raises(RunFolderError) as caught:
        resume_settings(saved, current, {"lr", "ipc", "device"})
    assert str(caught.value) == (
        "settings differ from the checkpoint's: --ipc (checkpoint: 10, given: 1), --lr (checkpoint: 0.005, given: 0.1)"
    )
    assert resume_settings(saved, {"ipc": 10, "lr": 0.005}, ["ipc", "lr"]) == {"ipc": 10, "lr": 0.005}


def test_changeable_settings_take_the_given_value_only_when_given() -> None:
    saved = {"iterations": 5, "ipc": 10}
    assert resume_settings(saved, {"iterations": 9, "ipc": 10}, ["iterations"], changeable=["iterations"]) == {
        "iterations": 9,
        "ipc": 10,
    }
    assert resume_settings(saved, {"iterations": 9, "ipc": 10}, [], changeable=["iterations"])["iterations"] == 5
    with pytest.raises(RunFolderError, match=r"--ipc \(checkpoint: 10, given: 1\)"):
        resume_settings(saved, {"iterations": 9, "ipc": 1}, ["iterations", "ipc"], changeable=["iterations"])


def test_write_config_rewrites_only_the_config(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.start({"iterations": 5})
    folder.save_checkpoint({"config": {"iterations": 5}})
    folder.write_config({"iterations": 9})
    assert json.loads((tmp_path / "config.json").read_text()) == {"iterations": 9}
    assert (tmp_path / "checkpoint.pt").is_file()


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: resume_settings([1], {}, []), "`saved`"),
        (lambda: resume_settings({}, None, []), "`current`"),
        (lambda: resume_settings({}, {}, "ipc"), "`given`"),
        (lambda: resume_settings({}, {}, [1]), "`given`"),
        (lambda: resume_settings({}, {}, [], defaults=3), "`defaults`"),
        (lambda: resume_settings({}, {"a": 1}, [], defaults={}), "`defaults`"),
        (lambda: resume_settings({}, {}, [], changeable="iterations"), "`changeable`"),
        (lambda: RunFolder("r").write_config(3), "`config`"),
        (lambda: RunFolder(3), "`path`"),
        (lambda: RunFolder("r", artefacts="grid.png"), "`artefacts`"),
        (lambda: RunFolder("r", artefacts=["sub/grid.png"]), "`artefacts`"),
        (lambda: RunFolder("r", checkpoint=""), "`checkpoint`"),
        (lambda: RunFolder("r", config="a/config.json"), "`config`"),
        (lambda: RunFolder("r", metrics=None), "`metrics`"),
        (lambda: RunFolder("r").write_metrics({"a": 1}), "`rows`"),
        (lambda: RunFolder("r").write_metrics([1]), "`rows`"),
        (lambda: RunFolder("r").start([("a", 1)]), "`config`"),
    ],
)
def test_bad_arguments_name_the_argument(call, argument: str) -> None:
    with pytest.raises(TypeError, match=argument) as caught:
        call()
    assert "\n" not in str(caught.value)
