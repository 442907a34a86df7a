"""Atomic file writes: readers and crashes see the old file or the new one,
never half of one.

:func:`write_atomically` writes to a temporary file beside the target
(``.NAME.XXXXXXXX.tmp``, the directory's own filesystem), then ``os.replace``-s
it over the target. A write killed mid-way leaves only its temporary, which
:func:`remove_stale_temporaries` recognises by that name.
"""

import fnmatch
import os
import pathlib
import re
import tempfile
import time

# tempfile.mkstemp(prefix=".NAME.", suffix=".tmp") names: 8 characters of [a-z0-9_]
_TEMPORARY = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")


def write_atomically(path, write, mode=0o644, durable=True):
    """Call ``write(f)`` on a binary temporary file beside ``path`` and rename it
    over ``path``; returns ``path`` as a pathlib.Path.

    The file gets permissions ``mode`` (mkstemp would leave it private).
    ``durable`` fsyncs the data and the directory before and after the
    rename, so the new file survives a power loss; scratch files that only
    need atomicity (parallel builds) skip it. An exception from ``write``
    removes the temporary and propagates.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)
    return path


def remove_stale_temporaries(directory, name=None, older_than=0.0):
    """Delete the temporaries that killed writes left in ``directory``; returns
    their paths.

    ``name`` (a glob pattern) limits it to the temporaries of the files it
    matches; ``older_than``
    (seconds) spares younger ones, which may be another process's write in
    progress. With neither, only for a directory no one else writes to (a
    run directory whose lock this process holds).
    """
    cutoff = time.time() - older_than
    removed = []
    for path in pathlib.Path(directory).glob(".*.tmp"):
        match = _TEMPORARY.fullmatch(path.name)
        if not match or (name is not None and not fnmatch.fnmatchcase(match.group(1), name)):
            continue
        try:
            if path.is_file() and (older_than <= 0 or path.stat().st_mtime < cutoff):
                path.unlink()
                removed.append(path)
        except OSError:  # gone already, or not ours to remove
            pass
    return removed


def _fsync_dir(directory):
    # Makes the rename itself durable on POSIX; directories cannot be opened on Windows.
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
