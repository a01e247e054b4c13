"""The output folder of an evaluation: the settings it is bound to and one record per finished cell.

The folder holds

- ``settings.json``: the [`EvalSettings`][hmdc_modules.evaluation.records.EvalSettings] it was started with;
- ``cells/<set>--<model>--seed<seed>.json``: one [`CellResult`][hmdc_modules.evaluation.records.CellResult] per
  finished cell, written atomically (temporary file, then rename) as soon as the cell is done;
- the reports ([`write_reports`][hmdc_modules.evaluation.report.write_reports]).

A record is reused only when it still belongs to its cell: the same set file content (SHA-256), the same model
recipe and, where the folder has no ``settings.json``, the same settings. Anything else is refused with the
differences, old and new, so a folder never mixes results of two protocols.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hmdc_modules._validation import describe
from hmdc_modules.condensation import atomic_write_text
from hmdc_modules.evaluation.records import Cell, CellResult, EvalSettings

__all__ = ["load_results"]

SETTINGS_FILE = "settings.json"
CELLS_DIR = "cells"


def cell_file(out: Path, key: str) -> Path:
    """Where the record of the cell ``key`` lives in the folder ``out``."""
    return out / CELLS_DIR / f"{key}.json"


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"'{path}' is not {what} ({type(error).__name__}: {error}); remove it to go on") from None


def read_record(path: Path) -> CellResult:
    """The cell record stored at ``path``.

    Raises:
        ValueError: If the file is not a cell record (unreadable JSON or missing fields).
    """
    data = _read_json(path, "a cell record")
    try:
        return CellResult.from_dict(data)
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"'{path}' is not a cell record ({error}); remove it to recompute the cell") from None


def load_results(out: str | os.PathLike[str]) -> list[CellResult]:
    """Every cell record stored in an output folder, sorted by file name.

    Args:
        out: The output folder of [`run_suite`][hmdc_modules.evaluation.suite.run_suite].

    Returns:
        The records (empty if there are none).

    Raises:
        TypeError: If ``out`` is not a string or path.
        ValueError: If a record file is not a cell record.

    Examples:
        >>> import tempfile
        >>> load_results(tempfile.mkdtemp())
        []
    """
    if not isinstance(out, str | os.PathLike):
        raise TypeError(f"`out` must be a str or path, got {describe(out)}")
    folder = Path(out) / CELLS_DIR
    return [read_record(path) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def _listed(differences: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in differences.items())


def bind_settings(out: Path, settings: EvalSettings, *, write: bool) -> bool:
    """Compare ``settings`` with the folder's ``settings.json``, writing the file when it is absent and ``write``.

    Returns:
        Whether the folder is bound to settings now (the file existed or was written).

    Raises:
        ValueError: If the folder's settings differ in a setting that changes results, or the file is unreadable.
    """
    path = out / SETTINGS_FILE
    if not path.is_file():
        if write:
            write_json(path, settings.to_dict())
        return write
    try:
        stored = EvalSettings.from_dict(_read_json(path, "an evaluation settings file"))
    except (ValueError, TypeError) as error:
        raise ValueError(f"`out`: '{path}' is not an evaluation settings file ({error})") from None
    changed = settings.differences(stored)
    if changed:
        raise ValueError(
            f"`out` '{out}' holds results computed with other settings ({_listed(changed)}); use a new output "
            "folder, or the folder's settings to continue it"
        )
    return True


def check_record(path: Path, cell: Cell, sha256: str, settings: EvalSettings | None = None) -> CellResult:
    """The record of ``cell`` at ``path``, checked against the set's content, the recipe and ``settings``.

    Args:
        path: The record file.
        cell: The cell it should belong to.
        sha256: The SHA-256 of the set file now.
        settings: The settings to compare with (``None``: the folder's ``settings.json`` answers for them).

    Raises:
        ValueError: If the record is unreadable, or was computed from other set content, another recipe or other
            settings.
    """
    stored = read_record(path)
    if stored.set_sha256 != sha256:
        raise ValueError(
            f"set '{cell.set.name}' ('{cell.set.path}') changed since '{path}' was computed (other file content); "
            "give the new set another name, or use a new output folder"
        )
    wanted = cell.model.to_dict()
    if stored.model != wanted:
        changed = {k: (stored.model.get(k), wanted.get(k)) for k in wanted if stored.model.get(k) != wanted.get(k)}
        raise ValueError(
            f"model '{cell.model.display_name}' of '{path}' was trained with another recipe ({_listed(changed)}); "
            "give the new recipe another label, or use a new output folder"
        )
    if settings is not None and stored.settings:  # a folder without settings.json: each record answers for itself
        try:
            changed = settings.differences(EvalSettings.from_dict(stored.settings))
        except (ValueError, TypeError) as error:
            raise ValueError(f"'{path}' holds unreadable settings ({error}); remove it to recompute the cell") from None
        if changed:
            raise ValueError(
                f"'{path}' was computed with other settings ({_listed(changed)}); remove it to recompute the cell"
            )
    return stored
