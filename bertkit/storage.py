"""Files that survive a kill or a full disk: atomic writes and run directories.

Every file bertkit writes for a user to keep goes through :func:`atomic_write` (or
:func:`commit_file` for files another library writes): the bytes go to a temporary
file in the target's directory, are flushed to the disk, and the temporary file is
renamed over the target. A reader, or a rerun after a crash, sees the old file or the
new one, never half of one; a failed write removes the temporary file and leaves the
old file as it was. A full disk is one clear ``OSError`` naming the file.

A :class:`RunDirectory` makes a whole training run a transaction: its manifest,
``run.json``, names the files that belong together (the best weights, predictions,
resumable state) with the settings that produced them. New files are written under
new names first and the manifest is replaced last, so settings and weights always
change together; the files of the previous version are removed only after the new
manifest is in place.

Example:

>>> with atomic_write("notes.txt") as f:            # doctest: +SKIP
...     f.write("kept whole or not at all\\n")
>>> run = RunDirectory("runs/mine")                   # doctest: +SKIP
>>> run.claim(overwrite=False)                        # refuses another run's directory
>>> run.commit({"lr": 2e-5}, {"weights": ("best.weights.h5", weights_writer(model))})
"""
import contextlib
import datetime
import errno
import io
import json
import os
import re
import shutil
import tempfile

__all__ = ["atomic_write", "commit_file", "commit_directory", "write_lines_atomically", "write_bytes_atomically",
           "weights_to_bytes", "save_weights_atomically", "weights_writer", "RunDirectory",
           "RunDirectoryError", "MANIFEST_FILE"]

MANIFEST_FILE = "run.json"
_MANIFEST_FORMAT = 1
_TEMPORARY = re.compile(r"^\..+\.tmp-[0-9a-z_]+$")  # what atomic_write leaves after a kill


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory):
    """Makes a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _disk_error(error, path):
    """``error`` as one clear message naming ``path`` when the disk is full or read-only."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        reason = "the file system is read-only" if error.errno == errno.EROFS \
            else "no space left on the device"
        return OSError(error.errno, f"cannot write {path}: {reason}; the previous version "
                                    "of the file, if any, is intact")
    return None


def commit_file(tmp_path, path):
    """Flushes ``tmp_path`` to the disk and renames it over ``path`` (atomically).

    For files that another library wrote to a temporary name of the same directory
    (a TensorFlow checkpoint, say). ``os.replace`` is atomic within one file system,
    so ``tmp_path`` must be beside ``path``.
    """
    with open(tmp_path, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp_path, path)
    _fsync_directory(os.path.dirname(os.path.abspath(path)))


@contextlib.contextmanager
def atomic_write(path, mode="w", encoding="utf-8"):
    """Opens a temporary file that replaces ``path`` when the block ends without error.

    Args:
        path: the file to write; a missing parent folder is created.
        mode: ``"w"`` (text, in ``encoding``) or ``"wb"``.
        encoding: text encoding in mode ``"w"``.

    Yields:
        The open temporary file.

    Raises:
        OSError: the disk is full (or read-only); the message names ``path`` and the old
            file is intact. Any error inside the block propagates; ``path`` is unchanged
            and the temporary file removed.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=directory)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would give
        with os.fdopen(fd, mode, **({"encoding": encoding} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_directory(directory)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(tmp_path)
        clear = _disk_error(error, path)
        if clear is not None:
            raise clear from None
        raise


def commit_directory(tmp_directory, path):
    """Flushes the files of ``tmp_directory`` to the disk and puts the directory at
    ``path``, replacing an earlier one.

    For a directory of files written together (an export). ``tmp_directory`` must be
    beside ``path``. A directory cannot be renamed over another, so an existing ``path``
    is first renamed aside and removed once the new one is in place: a failed rename puts
    it back, and a kill in between leaves it whole under its hidden ``.old-`` name, never
    half-replaced.
    """
    for root, _, files in os.walk(tmp_directory):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_directory(root)
    os.chmod(tmp_directory, 0o777 & ~_umask())  # mkdtemp's 0700 -> what mkdir would give
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    aside = None
    if os.path.exists(path):
        aside = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
        os.rmdir(aside)
        os.replace(path, aside)
    try:
        os.replace(tmp_directory, path)
    except BaseException:
        if aside is not None:  # put the previous one back
            os.replace(aside, path)
        raise
    _fsync_directory(parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def write_lines_atomically(path, lines):
    """Writes ``lines`` to ``path``, one a line, in UTF-8, atomically.

    If ``lines`` (an iterable) raises, ``path`` is left as it was.
    """
    with atomic_write(path) as f:
        for line in lines:
            f.write(line + "\n")


def write_bytes_atomically(path, data):
    """Writes ``data`` (bytes) to ``path`` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def weights_to_bytes(model):
    """The bytes of ``model.save_weights("x.weights.h5")``, made in memory.

    Serialising in memory first means the only disk write is one plain ``write`` of
    finished bytes: a full disk then fails cleanly instead of inside HDF5's C library
    (which can crash the process), and the file on disk is whole or absent.
    """
    from keras.src.saving import saving_lib  # the writer behind Model.save_weights

    if not model.built:
        raise ValueError("cannot save the weights of a model that is not built yet")
    buffer = io.BytesIO()
    store = saving_lib.H5IOStore(buffer, mode="w")
    saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="",
                           visited_saveables=set())
    store.close()
    return buffer.getvalue()


def save_weights_atomically(model, path):
    """``model.save_weights(path)`` that never leaves a partial ``path`` (see
    :func:`weights_to_bytes`); ``model.load_weights(path)`` reads it back."""
    if not os.fspath(path).endswith(".weights.h5"):
        raise ValueError(f"a weights file name must end in .weights.h5, got {path!r}")
    write_bytes_atomically(path, weights_to_bytes(model))


def weights_writer(model):
    """A writer for :meth:`RunDirectory.commit`: saves ``model``'s weights to a path."""
    return lambda path: write_bytes_atomically(path, weights_to_bytes(model))


class RunDirectoryError(ValueError):
    """An output directory holds another run, or its manifest is not readable."""


class RunDirectory:
    """A directory whose files change together, through one manifest (``run.json``).

    The manifest holds the run's ``settings`` (what rebuilds the model), ``files``
    (``{role: file name}``: weights, predictions, state) and ``state`` (the best score,
    the step, ...). :meth:`commit` writes each new file under a name of its own
    (``best.3.weights.h5`` for version 3), then replaces the manifest, then removes
    the files of the version before. A kill or a full disk at any point leaves the last
    committed version complete and named by the manifest.

    Args:
        path: the directory (created on the first commit).
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.manifest_path = os.path.join(self.path, MANIFEST_FILE)
        self._own = set()  # roles whose files this run wrote (or resumed): what keep keeps

    def read(self):
        """The manifest as a dict (``settings``, ``files``, ``state``, ...), or None.

        A manifest written by bertkit 0.1.0 (the settings alone, with
        ``best.weights.h5``) is read as one naming that file.

        Raises:
            RunDirectoryError: the manifest is not valid JSON, or names a missing file.
        """
        if not os.path.isfile(self.manifest_path):
            return None
        try:
            with open(self.manifest_path, encoding="utf-8") as f:
                manifest = json.load(f)
        except (ValueError, UnicodeDecodeError) as error:
            raise RunDirectoryError(f"{self.manifest_path} is not a readable run manifest "
                                    f"({error})") from None
        if not isinstance(manifest, dict):
            raise RunDirectoryError(f"{self.manifest_path} is not a run manifest")
        if "format" not in manifest:  # bertkit 0.1.0: the settings, beside best.weights.h5
            manifest = {"format": 0, "version": 0, "settings": manifest, "state": {},
                        "files": {"weights": "best.weights.h5"}}
        for role, name in manifest.get("files", {}).items():
            if not os.path.isfile(os.path.join(self.path, name)):
                raise RunDirectoryError(f"{self.manifest_path} names {role} file {name}, "
                                        "which is missing")
        return manifest

    def file(self, role):
        """The path of the committed file of ``role``, or None."""
        manifest = self.read()
        name = (manifest or {}).get("files", {}).get(role)
        return None if name is None else os.path.join(self.path, name)

    def describe(self):
        """One line about the committed run: when it was saved and its state."""
        manifest = self.read()
        if manifest is None:
            return f"{self.path}: no run"
        state = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in manifest.get("state", {}).items())
        saved = manifest.get("saved", "by bertkit 0.1.0")
        return f"{self.path} holds a run saved {saved}" + (f" ({state})" if state else "")

    def claim(self, overwrite=False, resume=False, clean=True):
        """Checks that a new run may start here; call it before any work is done.

        Returns the committed manifest when ``resume`` (None if there is none), else
        None. Temporary files of an interrupted write are removed (unless ``clean`` is
        false: a process that only reads the run, such as a worker that is not the chief).

        Raises:
            RunDirectoryError: the directory holds another run and neither
                ``overwrite`` nor ``resume`` is set. With ``overwrite`` the old run
                stays readable until the new one commits.
        """
        manifest = self.read()
        if manifest is not None and not (overwrite or resume):
            raise RunDirectoryError(
                f"{self.describe()}; pass --overwrite to replace it (it is kept until "
                "the new run saves), --resume where the script supports it, or another "
                "--output-dir")
        if clean and os.path.isdir(self.path):
            for name in os.listdir(self.path):
                if _TEMPORARY.match(name):
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(self.path, name))
        if resume and manifest is not None:
            self._own = set(manifest.get("files", {}))
        return manifest if resume else None

    def commit(self, settings, files, state=None, keep=()):
        """Writes a new version of the run: its files, then the manifest naming them.

        Args:
            settings: JSON-ready dict of what rebuilds the model (flags, paths).
            files: ``{role: (file name, writer)}``; ``writer(path)`` writes the file at
                ``path`` (through :func:`atomic_write` or a function built on it). The
                version number goes into the name before its first dot
                (``best.weights.h5`` -> ``best.4.weights.h5``).
            state: JSON-ready dict of progress (best score, epoch, step).
            keep: roles of the committed version whose files the new version keeps as
                they are (a resume state saved between two best-weights saves keeps
                the best weights), and the entries of its ``state`` that ``state``
                does not give. Only files this run wrote, or the run it resumed
                (``claim(resume=True)``), are kept: never those of a run it replaces.

        Returns:
            ``{role: path}`` of the files written.
        """
        os.makedirs(self.path, exist_ok=True)
        try:
            previous = self.read()
        except RunDirectoryError:
            previous = None
        version = (previous or {}).get("version", 0) + 1
        kept = (previous or {}).get("files", {})
        names = {role: kept[role] for role in keep
                 if role in kept and role in self._own and role not in files}
        if keep and self._own:
            state = {**(previous or {}).get("state", {}), **(state or {})}
        for role, (name, write) in files.items():
            stem, dot, suffix = name.partition(".")
            names[role] = f"{stem}.{version}{dot}{suffix}"
            write(os.path.join(self.path, names[role]))
        self._own = set(names)
        manifest = {"format": _MANIFEST_FORMAT, "version": version,
                    "saved": datetime.datetime.now().isoformat(timespec="seconds"),
                    "settings": settings, "files": names, "state": state or {}}
        with atomic_write(self.manifest_path) as f:
            json.dump(manifest, f, indent=2, ensure_ascii=False)
            f.write("\n")
        for name in set((previous or {}).get("files", {}).values()) - set(names.values()):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(self.path, name))
        return {role: os.path.join(self.path, name) for role, name in names.items()
                if role in files}
