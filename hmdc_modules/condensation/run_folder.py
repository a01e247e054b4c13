"""A run's folder: refuse to clobber a run, start one, resume one from its checkpoint alone, save it safely.

The conventions every condensation command of the package follows (the HMDC and DM examples):

* A folder that holds a run (any of its files) is refused unless the user asks to continue it (``--resume``) or
  to replace it (``--overwrite``); replacing happens only after every setting is known to work
  ([`RunFolder.start`][hmdc_modules.condensation.run_folder.RunFolder.start]).
* ``config.json`` records the run's settings (never where things are: paths, devices).
* A resumed run takes its settings from the checkpoint; a setting given explicitly on the command line must agree
  with it, and every clash is named with both values
  ([`resume_settings`][hmdc_modules.condensation.run_folder.resume_settings]).
* Checkpoints are written atomically and keep their predecessor as ``checkpoint.prev.pt``; reading falls back to it
  when the newest is damaged ([`load_latest_checkpoint`][hmdc_modules.condensation.io.load_latest_checkpoint]).
* Metrics go to a plain CSV file, rewritten atomically, one row per step.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hmdc_modules._validation import describe
from hmdc_modules.condensation.io import (
    LoadedCheckpoint,
    atomic_write_text,
    load_latest_checkpoint,
    previous_checkpoint_path,
    save_checkpoint,
)

__all__ = ["RunFolder", "RunFolderError", "resume_settings"]


class RunFolderError(ValueError):
    """A run folder cannot be used as asked; the message is one line saying why and what to do."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resume_settings(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    given: Iterable[str],
    *,
    defaults: Mapping[str, Any] | None = None,
    changeable: Iterable[str] = (),
) -> dict[str, Any]:
    """The settings of a resumed run: the checkpoint's, after checking those given explicitly against them.

    Args:
        saved: The settings stored in the checkpoint (keys it has that ``current`` lacks are ignored: settings that
            no longer exist).
        current: The settings as parsed now, one entry per setting (their keys are the result's keys).
        given: Names of the settings given explicitly (e.g. on the command line); names not in ``current`` (a
            location such as the output folder) are not compared.
        defaults: Where ``saved`` lacks a setting (one added since the run began), its value comes from here;
            ``None`` takes it from ``current``.
        changeable: Names of settings a resumed run may change (e.g. the number of iterations, to extend a
            finished run): when given, their current value is taken instead of the saved one.

    Returns:
        A new dict with the keys of ``current``: the saved value of each setting (or its default), or the given
        value of a changeable one.

    Raises:
        RunFolderError: If a given setting differs from the saved one; one line naming every clash as a flag with
            both values, e.g. ``--lr-img (checkpoint: 0.005, given: 0.1)``.
        TypeError: If ``saved``, ``current`` or ``defaults`` is not a mapping, or ``given`` is not an iterable of
            names.

    Examples:
        >>> resume_settings({"ipc": 10, "lr": 0.1}, {"ipc": 1, "lr": 0.1}, given=["lr", "out"])
        {'ipc': 10, 'lr': 0.1}
        >>> resume_settings({"ipc": 10, "steps": 5}, {"ipc": 1, "steps": 9}, ["steps"], changeable=["steps"])
        {'ipc': 10, 'steps': 9}
        >>> resume_settings({"ipc": 10, "lr": 0.1}, {"ipc": 1, "lr": 0.2}, given=["ipc", "lr"])
        Traceback (most recent call last):
        ...
        hmdc_modules.condensation.run_folder.RunFolderError: settings differ from the checkpoint's: --ipc (checkpoint: 10, given: 1), --lr (checkpoint: 0.1, given: 0.2)
    """  # noqa: E501
    for name, value in (("saved", saved), ("current", current), ("defaults", defaults)):
        if not isinstance(value, Mapping) and not (name == "defaults" and value is None):
            raise TypeError(f"`{name}` must be a mapping of setting names to values, got {describe(value)}")
    if isinstance(given, str | bytes) or not isinstance(given, Iterable):
        raise TypeError(f"`given` must be an iterable of setting names, got {describe(given)}")
    if isinstance(changeable, str | bytes) or not isinstance(changeable, Iterable):
        raise TypeError(f"`changeable` must be an iterable of setting names, got {describe(changeable)}")
    given, changeable = set(given), set(changeable)
    if not all(isinstance(name, str) for name in given | changeable):
        raise TypeError("`given` and `changeable` must hold setting names (str)")
    fallback = current if defaults is None else defaults
    missing = [name for name in current if name not in saved and name not in fallback]
    if missing:
        raise TypeError(f"`defaults` has no value for {missing[0]!r}, which the checkpoint lacks")
    settings = {name: saved[name] if name in saved else fallback[name] for name in current}
    settings |= {name: current[name] for name in given & changeable if name in current}
    clashes = [
        f"{_flag(name)} (checkpoint: {settings[name]!r}, given: {current[name]!r})"
        for name in sorted(given & set(current))
        if settings[name] != current[name]
    ]
    if clashes:
        raise RunFolderError(f"settings differ from the checkpoint's: {', '.join(clashes)}")
    return settings


class RunFolder:
    """The folder of one run: its config, checkpoints, metrics and the artefacts a command names.

    Nothing is written until [`start`][hmdc_modules.condensation.run_folder.RunFolder.start] (a new run) or a save.
    Every write is atomic (the kit's [`atomic_write`][hmdc_modules.condensation.io.atomic_write]).

    Args:
        path: The folder (it need not exist yet).
        artefacts: File names, inside the folder, of what the command writes besides the config, checkpoints and
            metrics (e.g. ``"synthetic.pt"``, ``"grid.png"``); they count as a run and are removed by ``start``.
        checkpoint: The checkpoint's file name (its predecessor is ``<stem>.prev<suffix>``).
        config: The config file's name.
        metrics: The metrics CSV file's name.

    Attributes:
        root: The folder, as a path.
        name: The folder as given, for messages.
        files: Every file name that belongs to a run.

    Raises:
        TypeError: If ``path`` is not a str or path, or a file name is not a plain name (no folder in it).

    Examples:
        >>> import tempfile, pathlib
        >>> folder = RunFolder(pathlib.Path(tempfile.mkdtemp()) / "run", artefacts=["synthetic.pt"])
        >>> folder.holds_run()
        False
        >>> folder.start({"ipc": 1})
        >>> folder.write_metrics([{"step": 0, "loss": 0.5}, {"step": 1, "loss": 0.25}])
        >>> print(folder.path("metrics.csv").read_text(), end="")
        step,loss
        0,0.5
        1,0.25
        >>> _ = folder.save_checkpoint({"config": {"ipc": 1}, "iteration": 1})
        >>> folder.load_checkpoint().state["iteration"]
        1
        >>> folder.check_new(overwrite=False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        hmdc_modules.condensation.run_folder.RunFolderError: '...run' holds a run; continue it with --resume or replace it with --overwrite
    """  # noqa: E501

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        artefacts: Sequence[str] = (),
        checkpoint: str = "checkpoint.pt",
        config: str = "config.json",
        metrics: str = "metrics.csv",
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"`path` must be a str or path, got {describe(path)}")
        if isinstance(artefacts, str) or not isinstance(artefacts, Sequence):
            raise TypeError(f"`artefacts` must be a sequence of file names, got {describe(artefacts)}")
        for what, value in (("checkpoint", checkpoint), ("config", config), ("metrics", metrics)):
            self._check_name(what, value)
        for value in artefacts:
            self._check_name("artefacts", value)
        self.root, self.name = Path(path), os.fspath(path)
        self.checkpoint_file, self.config_file, self.metrics_file = checkpoint, config, metrics
        previous = previous_checkpoint_path(checkpoint).name
        self.files: tuple[str, ...] = tuple(dict.fromkeys([config, checkpoint, previous, metrics, *artefacts]))

    @staticmethod
    def _check_name(what: str, value: Any) -> None:
        if not isinstance(value, str) or not value or Path(value).name != value or value in (".", ".."):
            raise TypeError(f"`{what}` must hold plain file names (no folder), got {describe(value)}")

    def __repr__(self) -> str:
        return f"RunFolder({self.name!r})"

    def path(self, name: str) -> Path:
        """The path of the file ``name`` inside the folder.

        Examples:
            >>> RunFolder("runs/a").path("grid.png").as_posix()
            'runs/a/grid.png'
        """
        return self.root / name

    def holds_run(self) -> bool:
        """Whether any file of a run is in the folder."""
        return any(self.path(name).exists() for name in self.files)

    def check_new(self, *, overwrite: bool) -> None:
        """Refuse to start a new run in a folder that holds one, unless ``overwrite``.

        Nothing is removed here: [`start`][hmdc_modules.condensation.run_folder.RunFolder.start] replaces the old
        run once every setting is known to work.

        Raises:
            RunFolderError: If the folder holds a run and ``overwrite`` is false.
        """
        if not overwrite and self.holds_run():
            raise RunFolderError(f"{self.name!r} holds a run; continue it with --resume or replace it with --overwrite")

    def load_checkpoint(self) -> LoadedCheckpoint:
        """The newest readable checkpoint, or the previous one (its ``message`` says why) when the newest is damaged.

        Raises:
            RunFolderError: If there is no checkpoint, or neither is readable (one line naming the files).
        """
        try:
            return load_latest_checkpoint(self.path(self.checkpoint_file))
        except (FileNotFoundError, ValueError) as error:  # CheckpointError is a ValueError
            raise RunFolderError(str(error)) from None

    def start(self, config: Mapping[str, Any]) -> None:
        """Begin a new run: remove the files of any old run, then write ``config`` as JSON.

        Call it only once every setting is known to work, so that a refused run never touches an old one.

        Args:
            config: The run's settings (JSON-serialisable values).

        Raises:
            TypeError: If ``config`` is not a mapping or cannot be written as JSON (nothing is removed then).
        """
        text = self._config_text(config)
        for name in self.files:
            self.path(name).unlink(missing_ok=True)
        atomic_write_text(self.path(self.config_file), text)

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Rewrite the config file atomically (e.g. after a resume changed a changeable setting).

        Raises:
            TypeError: If ``config`` is not a mapping or cannot be written as JSON.
        """
        atomic_write_text(self.path(self.config_file), self._config_text(config))

    @staticmethod
    def _config_text(config: Any) -> str:
        if not isinstance(config, Mapping):
            raise TypeError(f"`config` must be a mapping of settings, got {describe(config)}")
        try:
            return json.dumps(dict(config), indent=2) + "\n"
        except (TypeError, ValueError) as error:
            raise TypeError(f"`config` must hold JSON values: {error}") from None

    def save_checkpoint(self, state: dict[str, Any]) -> Path:
        """Write ``state`` atomically as the checkpoint, keeping the one it replaces as the previous checkpoint."""
        return save_checkpoint(state, self.path(self.checkpoint_file))

    def write_metrics(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Rewrite the metrics CSV atomically: a header (every column, in first-seen order), then one line a row.

        A row without a column leaves its cell empty; nothing is written for no rows.

        Raises:
            TypeError: If ``rows`` is not a sequence of mappings.
        """
        if isinstance(rows, str) or not isinstance(rows, Sequence) or not all(isinstance(r, Mapping) for r in rows):
            raise TypeError(f"`rows` must be a sequence of mappings (column to value), got {describe(rows)}")
        if not rows:
            return
        columns = list(dict.fromkeys(key for row in rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path(self.metrics_file), buffer.getvalue())

    def settings_from(self, loaded: LoadedCheckpoint, key: str = "config") -> Mapping[str, Any]:
        """The settings a checkpoint stores under ``key``.

        Raises:
            RunFolderError: If the checkpoint holds no settings mapping there.
        """
        settings = loaded.state.get(key)
        if not isinstance(settings, Mapping):
            raise RunFolderError(f"'{loaded.path}' holds no settings ({key!r}); it was not written by this command")
        return settings
