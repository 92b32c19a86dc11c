"""One writer per output file: an exclusive `flock` on a lock file beside the output.

Two collectors writing one file interleave half-lines and duplicate rows, so the whole run (the
overwrite included) holds `<output>.lock`. The lock is the kernel's, not the file's existence: a
collector killed with `kill -9` loses it the moment it dies, and the stale file it leaves behind
blocks nobody. The holder's PID is written into the file only so the second collector can name it.

The file is removed on release while still locked; an acquirer that locked a file which was unlinked
in between (its inode no longer matches the path) simply tries again.

The lock follows the file, not the name: it sits beside what the output path resolves to (every
symlink followed, of the file and of its folders), so `link.jsonl -> run.jsonl` and a path through a
symlinked folder take the one lock `run.jsonl.lock`. A hard link shares no name with the file at
all, so the output file itself is `flock`ed too, once it exists; a second collector that reaches it
under any name is refused before it has written a byte (and told the holder's PID, from
`/proc/locks`).

`flock` works on local file systems; on NFS it is emulated with byte-range locks by Linux and may
not be honoured across hosts, which is why the lock is about processes on one machine.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from nemo_gym.errors import OutputLockedError, OutputPathError, OutputWriteError


def resolved(path: str | Path) -> Path:
    """The file a name stands for: absolute, every symlink followed (the file itself need not exist)."""
    return Path(os.path.realpath(path))


def lock_path_for(output_path: str | Path) -> Path:
    target = resolved(output_path)
    return target.with_name(target.name + ".lock")


def how_one_file(a: str | Path, b: str | Path) -> str | None:
    """How two names reach one file: "the same path", "through a symlink", "a hard link", or None when
    they are two files. Compares what the names resolve to, then (st_dev, st_ino) of what exists."""
    if resolved(a) == resolved(b):
        return "the same path" if os.path.abspath(a) == os.path.abspath(b) else "through a symlink"
    try:
        first, second = os.stat(a), os.stat(b)
    except OSError:
        return None  # one of them does not exist yet: no inode to share
    if (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino):
        return "a hard link"
    return None


class OutputLock:
    """`acquire()` or raise OutputLockedError naming the holder; `release()` at the end of the run."""

    def __init__(self, output_path: str | Path):
        self.output_path = Path(output_path)
        self.file = resolved(self.output_path)
        """The output file whatever name it was given by; messages name this."""
        self.path = lock_path_for(self.output_path)
        self._fd: int | None = None
        self._file_fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> OutputLock:
        check_folder_path(self.output_path)
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
                    raise self._locked(f"{who} holds {self.path}", holder) from None
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
        try:
            self.hold_file()
        except BaseException:
            self.release()
            raise
        return self

    def hold_file(self) -> None:
        """`flock` the output file itself, if it exists, so a hard link to it is held too. `acquire()`
        calls it; call it again once the output has been created. Raises OutputLockedError."""
        if self._file_fd is not None:
            return
        try:
            try:
                # Read-write where possible: on NFS, flock is emulated with locks that need a writable fd.
                fd = os.open(self.file, os.O_RDWR | os.O_CLOEXEC)
            except PermissionError:
                fd = os.open(self.file, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # created later, under this lock, by the store: then no other name for it can exist yet
        except OSError as error:
            if error.errno != errno.EROFS:
                raise OutputWriteError(
                    f"cannot write {self.file}: {os_error_text(error)}", path=str(self.output_path)
                ) from None
            fd = os.open(self.file, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _flock_holder(fd)
            os.close(fd)
            who = f"PID {holder}" if holder else "another process"
            raise self._locked(f"{who} holds the file itself, under another name", holder) from None
        except BaseException:
            os.close(fd)
            raise
        self._file_fd = fd

    def _locked(self, holds: str, holder: int | None) -> OutputLockedError:
        return OutputLockedError(
            f"{self.file} is being written by another collector ({holds}); "
            f"wait for it to finish or choose another +output_jsonl_fpath",
            path=str(self.file),
            pid=holder,
        )

    def release(self) -> None:
        if self._file_fd is not None:
            os.close(self._file_fd)
            self._file_fd = None
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


def check_folder_path(output_path: Path) -> None:
    """Raise OutputPathError when a file stands where the output's folder (or one above it) must be:
    mkdir would say `File exists (EEXIST)` or `Not a directory`, which names neither the file nor the fix."""
    for parent in output_path.parents:  # relative ones end at ".", named as the user wrote them
        if parent.is_dir():
            return
        if os.path.lexists(parent):
            raise OutputPathError(
                f"cannot write {output_path}: {parent} is a file, not a directory; "
                f"choose another output path or move that file",
                path=str(output_path),
            )


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


def _flock_holder(fd: int) -> int | None:
    """The PID holding a flock on the file open as `fd`, from /proc/locks (Linux), else None."""
    stat = os.fstat(fd)
    inode = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    try:
        with open("/proc/locks") as table:
            for line in table:
                # "1: FLOCK  ADVISORY  WRITE 4242 00:2d:1234 0 EOF" (waiters have a "->" field first)
                fields = line.split()
                if "->" in fields:
                    continue
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == inode and fields[4].isdigit():
                    return int(fields[4])
    except OSError:
        pass
    return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (on_disk.st_dev, on_disk.st_ino)
