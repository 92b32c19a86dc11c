"""One writer per output file: an exclusive `flock` on a lock file beside the output.

Two collectors writing one file interleave half-lines and duplicate rows, so the whole run (the
overwrite included) holds `<output>.lock`. The lock is the kernel's, not the file's existence: a
collector killed with `kill -9` loses it the moment it dies, and the stale file it leaves behind
blocks nobody. The holder's PID is written into the file only so the second collector can name it.

The file is removed on release while still locked; an acquirer that locked a file which was unlinked
in between (its inode no longer matches the path) simply tries again.

`flock` works on local file systems; on NFS it is emulated with byte-range locks by Linux and may
not be honoured across hosts, which is why the lock is about processes on one machine.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from nemo_gym.errors import OutputLockedError, OutputWriteError


def lock_path_for(output_path: Path) -> Path:
    return output_path.with_name(output_path.name + ".lock")


class OutputLock:
    """`acquire()` or raise OutputLockedError naming the holder; `release()` at the end of the run."""

    def __init__(self, output_path: str | Path):
        self.output_path = Path(output_path)
        self.path = lock_path_for(self.output_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> OutputLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read_pid(fd)
                    os.close(fd)
                    who = f"PID {holder}" if holder else "another process"
                    raise OutputLockedError(
                        f"{self.output_path} is being written by another collector ({who} holds {self.path}); "
                        f"wait for it to finish or choose another +output_jsonl_fpath",
                        path=str(self.output_path),
                        pid=holder,
                    ) from None
                except BaseException:
                    os.close(fd)
                    raise
                if _same_file(fd, self.path):
                    break
                os.close(fd)  # the previous holder unlinked it after we opened it: lock the new one
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as error:
            raise OutputWriteError(
                f"cannot write {self.output_path} (its lock file {self.path}): {os_error_text(error)}",
                path=str(self.output_path),
            ) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass  # a read-only directory keeps the file; the next run locks it all the same
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def os_error_text(error: OSError) -> str:
    """`No space left on device (errno 28, ENOSPC)`: what the OS said, in one line."""
    name = errno.errorcode.get(error.errno or 0)
    code = f" (errno {error.errno}, {name})" if name else ""
    return f"{error.strerror or error}{code}"


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (on_disk.st_dev, on_disk.st_ino)
