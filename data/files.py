"""
One way to write a file: atomically. Every small file the project writes (tokenizer ranks, corpus jsonl, shard
manifests, metrics logs, eval reports, study markers) goes through write_atomic, so a crash or a reader in another
process never sees half a file, and an old file is replaced only by a complete new one. Folders (checkpoints) go
through atomic_dir the same way: written beside their name, synced, then renamed.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile


def write_atomic(path: str, *chunks) -> None:
    """Write the chunks (str as UTF-8, or anything with the buffer protocol: bytes, a contiguous numpy array) one
    after the other to path: into a temp file in the same folder, then one rename over path. The folder is
    created if needed; on any error the temp file is removed and path is left as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # the temp file lives beside path: a rename is only atomic within one file system
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)
            # the data reaches the disk before the rename does: after a power loss the name holds the old file or
            # the whole new one, never an empty one (a `latest` naming nothing)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary readable files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class atomic_dir:
    """`with atomic_dir(path) as tmp:` write into tmp; on success tmp replaces path, on error path is untouched.
    The temp folder is `<path>.tmp-<pid>`, and an existing path is moved aside to `<path>.old-<pid>` for the swap;
    a save killed midway leaves them behind for remove_stale_temp_dirs."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.tmp = f"{self.path}.tmp-{os.getpid()}"

    def __enter__(self):
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.makedirs(self.tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        # the data first, then the name: after a power loss, path (and the `latest` a caller writes next) must not
        # name a folder whose files never reached the disk
        fsync_tree(self.tmp)
        old = f"{self.path}.old-{os.getpid()}"
        if os.path.exists(self.path):
            os.replace(self.path, old)  # a folder cannot be renamed over a non-empty one: move it aside first
        os.replace(self.tmp, self.path)
        fsync_path(os.path.dirname(self.path))  # the renames
        shutil.rmtree(old, ignore_errors=True)
        return False


STALE_DIR_RE = re.compile(r"^(?P<name>.+)\.(?P<kind>tmp|old)-\d+$")  # atomic_dir's temp names


def remove_stale_temp_dirs(folder: str) -> None:
    """Clear what killed atomic_dir saves left in folder: `<name>.tmp-<pid>` folders (maybe half written) are
    deleted; `<name>.old-<pid>` is the previous <name> moved aside, so it is put back if the save was killed before
    the new <name> took its place, else deleted. Call it when no other process is saving into folder."""
    for entry in sorted(os.listdir(folder)):  # "x.old-N" before "x.tmp-N": restore before deleting
        m = STALE_DIR_RE.match(entry)
        path = os.path.join(folder, entry)
        if not m or os.path.islink(path) or not os.path.isdir(path):
            continue
        target = os.path.join(folder, m["name"])
        if m["kind"] == "old" and not os.path.exists(target):
            os.replace(path, target)
        else:
            shutil.rmtree(path, ignore_errors=True)


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)  # a folder too: fsync on it makes its entries (renames, new files) durable
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fsync_path(os.path.join(root, name))
        fsync_path(root)
