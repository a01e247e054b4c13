"""Run I/O that never loses data: one atomic writer, checkpoints that keep their predecessor, one figure saver.

Every file the kit writes goes through [`atomic_write`][hmdc_modules.condensation.io.atomic_write]: the content is
written to a temporary file beside the destination, flushed to disk and renamed over it. The rename is atomic on
POSIX file systems, so a crash or ``SIGKILL`` at any moment leaves either the previous file or the new one, never
half of one, and no temporary file is left behind on errors.

Files are read back with ``torch.load(..., weights_only=True)`` through
[`load_torch_file`][hmdc_modules.condensation.io.load_torch_file], which turns an empty, truncated or foreign file
into one clear line naming the file (a [`FileFormatError`][hmdc_modules.condensation.io.FileFormatError]), never
torch's advice to retry with ``weights_only=False``.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import uuid
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NamedTuple

import torch

from hmdc_modules._validation import describe

__all__ = [
    "CheckpointError",
    "FileFormatError",
    "LoadedCheckpoint",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "load_checkpoint",
    "load_latest_checkpoint",
    "load_torch_file",
    "previous_checkpoint_path",
    "save_checkpoint",
    "save_figure",
]


class FileFormatError(ValueError):
    """A file exists but does not hold what was expected (empty, truncated, foreign or unsafe content).

    The message is one line: the file, what was wrong, what was expected and what to do.
    """


class CheckpointError(FileFormatError):
    """A checkpoint file cannot be used (see [`load_checkpoint`][hmdc_modules.condensation.io.load_checkpoint])."""


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------


def _check_path(name: str, path: Any) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"`{name}` must be a str or path, got {describe(path)}")
    path = Path(path)
    if str(path) in ("", ".") or path.is_dir():
        raise ValueError(f"`{name}` must name a file, got '{path}', which is a folder")
    return path


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # make the rename itself durable where the platform allows it
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _write_temporary(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a complete, flushed temporary file beside ``path`` with ``write``; remove it on any error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # O_EXCL: never clobber; mode 0o666 lets the umask decide the final permissions, like a plain open().
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    return temporary


def _install(temporary: Path, path: Path, before: Callable[[], None] | None = None) -> Path:
    """Rename the finished ``temporary`` over ``path`` (after ``before``), removing it if anything fails."""
    try:
        if before is not None:
            before()
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    _fsync_folder(path.parent)
    return path


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename the finished file over ``path``.

    The one atomic writer of the package: a crash at any moment leaves the previous file at ``path`` (or none) or
    the new one, never a partial file; the temporary file is removed if ``write`` raises. Missing parent folders
    are created.

    Args:
        path: The destination file.
        write: Writes the whole content to the binary handle it is given.

    Returns:
        The destination path.

    Raises:
        TypeError: If ``path`` is not a str or path, or ``write`` is not callable.
        ValueError: If ``path`` is an existing folder.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> atomic_write(folder / "a.bin", lambda handle: handle.write(b"abc")).read_bytes()
        b'abc'
    """
    path = _check_path("path", path)
    if not callable(write):
        raise TypeError(f"`write` must be a callable taking a binary file handle, got {describe(write)}")
    return _install(_write_temporary(path, write), path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically (see [`atomic_write`][hmdc_modules.condensation.io.atomic_write]).

    Args:
        path: The destination file.
        data: The bytes to write.

    Returns:
        The destination path.

    Raises:
        TypeError: If ``data`` is not bytes-like or ``path`` is not a str or path.
        ValueError: If ``path`` is an existing folder.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> atomic_write_bytes(folder / "x.bin", b"\\x00\\x01").read_bytes()
        b'\\x00\\x01'
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"`data` must be bytes, got {describe(data)}")
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically, encoded with ``encoding`` (no newline translation).

    Args:
        path: The destination file.
        text: The text to write.
        encoding: The text encoding.

    Returns:
        The destination path.

    Raises:
        TypeError: If ``text`` is not a str or ``path`` is not a str or path.
        ValueError: If ``path`` is an existing folder.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> atomic_write_text(folder / "notes" / "a.txt", "hello\\n").read_text()
        'hello\\n'
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {describe(text)}")
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_torch_save(payload: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``payload`` with ``torch.save`` to ``path`` atomically (streamed, no copy held in memory).

    Args:
        payload: What to save (tensors and plain Python values load back with ``weights_only=True``).
        path: The destination file; its folder is created if needed.

    Returns:
        The destination path.

    Raises:
        TypeError: If ``path`` is not a str or path.
        ValueError: If ``path`` is an existing folder.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> path = atomic_torch_save({"x": torch.ones(2)}, folder / "x.pt")
        >>> torch.load(path, weights_only=True)["x"]
        tensor([1., 1.])
    """
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def save_figure(figure: Any, path: str | os.PathLike[str], *, dpi: int = 100) -> Path:
    """Render a matplotlib ``Figure`` on an Agg canvas to PNG bytes and write them atomically.

    The package's one matplotlib convention: figures are built as ``matplotlib.figure.Figure`` objects (never
    through ``pyplot``, so no global backend is chosen and nothing needs closing) and rendered here with
    ``FigureCanvasAgg``.

    Args:
        figure: A ``matplotlib.figure.Figure``.
        path: The destination PNG file.
        dpi: Dots per inch of the rendering.

    Returns:
        The destination path.

    Raises:
        TypeError: If ``figure`` is not a matplotlib ``Figure`` or ``dpi`` is not a positive int.

    Examples:
        >>> import tempfile, pathlib
        >>> from matplotlib.figure import Figure
        >>> figure = Figure(figsize=(2, 1))
        >>> _ = figure.subplots().plot([0, 1], [1, 0])
        >>> path = save_figure(figure, pathlib.Path(tempfile.mkdtemp()) / "line.png", dpi=50)
        >>> path.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
        True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(figure, Figure):
        raise TypeError(f"`figure` must be a matplotlib.figure.Figure, got {describe(figure)}")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or dpi < 1:
        raise TypeError(f"`dpi` must be a positive int, got {describe(dpi)}")
    path = _check_path("path", path)
    FigureCanvasAgg(figure)  # attaches itself as figure.canvas
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())


# --------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------


def _why_unreadable(data: bytes, error: BaseException) -> str:
    """A short, safe description of why ``torch.load`` refused ``data`` (never torch's own advice)."""
    if not data:
        return "the file is empty (0 bytes)"
    if isinstance(error, pickle.UnpicklingError) and zipfile.is_zipfile(io.BytesIO(data)):
        return (
            "it holds objects other than tensors and plain Python values, which are refused because loading them "
            "could run code"
        )
    if data[:2] == b"PK" or isinstance(error, EOFError):
        return f"the file is truncated or corrupt ({len(data)} bytes, not a complete torch archive)"
    return f"the file is not a torch file ({len(data)} bytes of other content)"


def load_torch_file(
    path: str | os.PathLike[str],
    *,
    what: str = "torch file",
    hint: str = "write it again",
    error: type[FileFormatError] = FileFormatError,
) -> Any:
    """Load ``path`` with ``torch.load(..., map_location="cpu", weights_only=True)``, failing in one clear line.

    The file is read whole first, so a truncated file never surfaces as a bare ``OSError`` without its name.

    Args:
        path: The file to read.
        what: What the file should hold, for messages (e.g. ``"checkpoint"``).
        hint: What the user should do when the file is unusable, for messages.
        error: The [`FileFormatError`][hmdc_modules.condensation.io.FileFormatError] subclass to raise.

    Returns:
        The loaded object (tensors and plain Python values only).

    Raises:
        FileNotFoundError: If there is no file at ``path`` (the message names it).
        FileFormatError: If the file is empty, truncated, not a torch file or holds objects that could run code;
            one line naming the file, what was expected and ``hint``.
        OSError: If the file cannot be read (the message names it).

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "empty.pt"
        >>> _ = path.write_bytes(b"")
        >>> load_torch_file(path, what="checkpoint", hint="delete it")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        hmdc_modules.condensation.io.FileFormatError: '...empty.pt' is not a checkpoint file: ...
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"`path` must be a str or path, got {describe(path)}")
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"`path` '{path}' is a folder; expected a {what} file")
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at '{path}' (`path`); check the path")
    try:
        data = path.read_bytes()
    except OSError as failure:
        raise OSError(failure.errno, f"cannot read the {what} file '{path}': {failure.strerror}") from None
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files; we report instead
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as failure:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for foreign files
        reason = _why_unreadable(data, failure)
    raise error(
        f"'{path}' is not a {what} file: {reason}; expected a {what} file written by hmdc_modules "
        f"(tensors and plain Python values, loadable with weights_only=True); {hint}"
    )


def previous_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """Where [`save_checkpoint`][hmdc_modules.condensation.io.save_checkpoint] keeps the checkpoint it replaced.

    Args:
        path: The checkpoint file.

    Returns:
        ``path`` with ``.prev`` inserted before its suffix.

    Examples:
        >>> previous_checkpoint_path("runs/a/checkpoint.pt").as_posix()
        'runs/a/checkpoint.prev.pt'
    """
    path = _check_path("path", path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str], *, keep_previous: bool = True) -> Path:
    """Write ``state`` atomically to ``path``, keeping the checkpoint it replaces as ``<stem>.prev<suffix>``.

    The new checkpoint is written completely to a temporary file first. Only then is the existing checkpoint (if
    any) hard-linked to [`previous_checkpoint_path`][hmdc_modules.condensation.io.previous_checkpoint_path]
    (renamed where the file system has no hard links) and the new file renamed over ``path``. A crash at any moment
    therefore leaves a complete checkpoint at ``path`` or at the previous path, and
    [`load_latest_checkpoint`][hmdc_modules.condensation.io.load_latest_checkpoint] finds it.

    Args:
        state: A dict of tensors and plain Python values (so that it loads with ``weights_only=True``).
        path: The destination file; its folder is created if needed.
        keep_previous: Keep the replaced checkpoint; ``False`` simply replaces it.

    Returns:
        The destination path.

    Raises:
        TypeError: If ``state`` is not a dict, ``path`` is not a str or path, or ``keep_previous`` is not a bool.
        ValueError: If ``path`` is an existing folder.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = save_checkpoint({"step": 1}, folder / "checkpoint.pt")
        >>> _ = save_checkpoint({"step": 2}, folder / "checkpoint.pt")
        >>> sorted(p.name for p in folder.iterdir())
        ['checkpoint.prev.pt', 'checkpoint.pt']
        >>> load_checkpoint(folder / "checkpoint.prev.pt")
        {'step': 1}
    """
    if not isinstance(state, dict):
        raise TypeError(f"`state` must be a dict, got {describe(state)}")
    if not isinstance(keep_previous, bool):
        raise TypeError(f"`keep_previous` must be a bool, got {describe(keep_previous)}")
    path = _check_path("path", path)

    def keep() -> None:
        if keep_previous and path.is_file():
            previous = previous_checkpoint_path(path)
            with contextlib.suppress(FileNotFoundError):
                previous.unlink()
            try:
                os.link(path, previous)  # path stays in place: there is always a file at path
            except OSError:
                os.replace(path, previous)

    return _install(_write_temporary(path, lambda handle: torch.save(state, handle)), path, before=keep)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by [`save_checkpoint`][hmdc_modules.condensation.io.save_checkpoint] onto the CPU.

    Loads with ``weights_only=True``: only tensors and plain Python values are accepted, never pickled code.

    Args:
        path: The checkpoint file.

    Returns:
        The stored dict.

    Raises:
        FileNotFoundError: If there is no file at ``path``.
        CheckpointError: If the file is empty, truncated, not a torch file, holds objects that could run code, or
            does not hold a dict; one line naming the file and what to do.

    Examples:
        >>> import tempfile, pathlib
        >>> path = save_checkpoint({"step": 3}, pathlib.Path(tempfile.mkdtemp()) / "checkpoint.pt")
        >>> load_checkpoint(path)
        {'step': 3}
    """
    path = _check_path("path", path)
    hint = (
        f"resume from '{previous_checkpoint_path(path).name}' if it is there (move it over this one), "
        "or start the run afresh"
    )
    state = load_torch_file(path, what="checkpoint", hint=hint, error=CheckpointError)
    if not isinstance(state, dict):
        raise CheckpointError(
            f"'{path}' is not a checkpoint file: it holds a {type(state).__name__}, "
            f"expected a checkpoint dict written by save_checkpoint; {hint}"
        )
    return state


class LoadedCheckpoint(NamedTuple):
    """What [`load_latest_checkpoint`][hmdc_modules.condensation.io.load_latest_checkpoint] found.

    Attributes:
        state: The checkpoint's dict.
        path: The file it was read from (the newest checkpoint, or the previous one after a fallback).
        message: ``None`` when the newest checkpoint was read; otherwise one line saying why it was skipped and
            which file was read instead, for the caller to print.
    """

    state: dict[str, Any]
    path: Path
    message: str | None


def load_latest_checkpoint(path: str | os.PathLike[str]) -> LoadedCheckpoint:
    """Read the checkpoint at ``path``, falling back to the previous one when the newest is missing or unreadable.

    Args:
        path: The checkpoint file (its predecessor is
            [`previous_checkpoint_path(path)`][hmdc_modules.condensation.io.previous_checkpoint_path]).

    Returns:
        A [`LoadedCheckpoint`][hmdc_modules.condensation.io.LoadedCheckpoint]: the state, the file read and, after a
        fallback, the message to show.

    Raises:
        FileNotFoundError: If neither file exists.
        CheckpointError: If neither file is a readable checkpoint (the message names both).

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = save_checkpoint({"step": 1}, folder / "checkpoint.pt")
        >>> _ = save_checkpoint({"step": 2}, folder / "checkpoint.pt")
        >>> _ = (folder / "checkpoint.pt").write_bytes(b"")  # the newest one is damaged
        >>> loaded = load_latest_checkpoint(folder / "checkpoint.pt")
        >>> loaded.state, loaded.path.name
        ({'step': 1}, 'checkpoint.prev.pt')
    """
    path = _check_path("path", path)
    previous = previous_checkpoint_path(path)
    try:
        return LoadedCheckpoint(load_checkpoint(path), path, None)
    except (FileNotFoundError, CheckpointError) as failure:
        if not previous.is_file():
            raise
        newest = failure
    try:
        state = load_checkpoint(previous)
    except CheckpointError as failure:
        raise CheckpointError(
            f"neither checkpoint is readable: '{path}' ({_first_clause(newest)}) nor '{previous}' "
            f"({_first_clause(failure)}); start the run afresh"
        ) from None
    message = f"{_first_clause(newest)}; resuming from the previous checkpoint '{previous}' instead"
    return LoadedCheckpoint(state, previous, message)


def _first_clause(error: BaseException) -> str:
    """The part of one of this module's messages before the expectation and hint."""
    return str(error).split("; ", 1)[0]
