"""
One way to write a file: atomically. Every small file the project writes (tokenizer ranks, corpus jsonl, shard
manifests, metrics logs, eval reports, study markers) goes through write_atomic, so a crash or a reader in another
process never sees half a file, and an old file is replaced only by a complete new one.
"""
from __future__ import annotations

import os
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
