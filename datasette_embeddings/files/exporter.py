"""Export records back to the canonical Parquet layout."""
from __future__ import annotations

import os
import secrets
import stat
import tempfile
from contextlib import contextmanager
from typing import BinaryIO, Iterator, Sequence

from .parquet_io import ParquetRecordWriter
from ..errors import NotFoundError
from ..storage.store import Store


class ExportError(Exception):
    """The database or the selection cannot be exported; the message says why."""


def _open(db_path: str) -> Store:
    """A read-only store, refusing files that are not datasette-embeddings databases."""
    try:
        return Store.open(db_path)
    except NotFoundError as ex:
        raise ExportError(str(ex)) from None


def _check_selection(store: Store, providers: Sequence[str], models: Sequence[str]) -> None:
    """An unknown name is almost always a typo: say so instead of writing an empty file."""
    known_models = {m.label for m in store.models()}
    for label in models:
        if label not in known_models:
            raise ExportError(f"unknown model '{label}' (known: {', '.join(sorted(known_models)) or 'none'})")
    if providers:
        known = {row[0] for row in store.conn.execute("select distinct provider from records")}
        for provider in providers:
            if provider not in known:
                raise ExportError(f"unknown provider '{provider}' (known: {', '.join(sorted(known)) or 'none'})")


def output_target(db_path: str, out_path: str) -> str:
    """The regular file an export will replace: ``out_path`` with its symlinks followed.

    Refuses the database itself (under any name: a symlink, a hard link, or one of
    SQLite's files beside it) and anything that is not a regular file, such as a
    device node (``/dev/full``), a FIFO or a directory: an export replaces its
    target by renaming a new file over it, which for those would destroy them.
    """
    target = os.path.realpath(out_path)
    database = os.path.realpath(db_path)
    if target in {database + suffix for suffix in ("", "-journal", "-wal", "-shm")}:
        raise ExportError(f"{out_path}: is the database being exported; choose another output file")
    if os.path.lexists(target):
        try:
            st = os.stat(target)
        except OSError as ex:
            raise ExportError(f"{out_path}: cannot write there ({ex.strerror})") from None
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, pipe or socket)"
            raise ExportError(f"{out_path}: is {kind}; export writes only regular files")
        if os.path.samefile(target, db_path):
            raise ExportError(f"{out_path}: is the database being exported; choose another output file")
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise ExportError(f"{out_path}: directory {directory} does not exist")
    return target


def _unnamed_file(directory: str) -> int | None:
    """An open file in ``directory`` with no name yet (Linux ``O_TMPFILE``), or None where unsupported.

    Until it is linked, the kernel deletes it when the process ends however it
    ends (even SIGKILL), so an interrupted export leaves nothing behind.
    """
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return None
    try:
        return os.open(directory, flag | os.O_WRONLY | os.O_CLOEXEC, 0o666)
    except OSError:
        return None  # a filesystem without O_TMPFILE support


@contextmanager
def replaced_atomically(target: str) -> Iterator[BinaryIO]:
    """A file object whose content replaces ``target`` in one rename if the body succeeds.

    Anywhere it can the file has no name until it is complete; otherwise it is
    written as a hidden ``.partial`` file beside the target and removed on any
    error or interruption.
    """
    directory, name = os.path.split(target)
    fd = _unnamed_file(directory)
    partial = None
    if fd is None:
        fd, partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=directory)
        os.fchmod(fd, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
            if partial is None:
                partial = _give_name(out.fileno(), directory, name)
        os.replace(partial, target)
        partial = None
    finally:
        if partial is not None:
            try:
                os.unlink(partial)
            except OSError:
                pass


def _give_name(fd: int, directory: str, name: str) -> str:
    """Link a finished unnamed file into ``directory`` under a fresh hidden name, to rename over the target."""
    proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        while True:
            candidate = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.partial")
            try:
                # a directory fd makes Python call linkat() with AT_SYMLINK_FOLLOW; a plain
                # link() would try to link the /proc symlink itself (EXDEV)
                os.link(f"self/fd/{fd}", candidate, src_dir_fd=proc, follow_symlinks=True)
                return candidate
            except FileExistsError:
                continue
    finally:
        os.close(proc)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def export(db_path: str, out_path: str, *, providers: Sequence[str] = (), models: Sequence[str] = ()) -> int:
    """Write the selected records to ``out_path``; vectors come out bit-identical to what was loaded.

    The whole export reads in one transaction, so an export taken while a
    ``load`` runs holds exactly the files committed when it started.
    """
    target = output_target(db_path, out_path)
    store = _open(db_path)
    conn = store.conn
    try:
        conn.execute("begin")  # deferred: the first read below fixes the snapshot
        _check_selection(store, providers, models)
        with replaced_atomically(target) as out:
            with ParquetRecordWriter(out) as writer:
                for rows in store.iter_stored_rows(providers=providers, models=models, batch_size=256):
                    writer.write_stored(rows)
        return writer.count
    finally:
        conn.close()
