"""Bounded reading of a user-named file: regular files only, at most ``limit`` bytes.

Contract: :func:`read_bounded` opens ``path`` without blocking (a FIFO never hangs), refuses
anything that is not a regular file (FIFOs, devices such as ``/dev/zero``, directories, sockets)
and reads at most ``limit + 1`` bytes, so an over-long file is refused without reading it whole.
Every refusal is a :class:`FileRefused` whose message is a complete sentence (no path in it; the
caller prefixes the file name).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


class FileRefused(Exception):
    """The file cannot be used; ``str(exc)`` says why (``file not found``, ``is a FIFO``...)."""


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_bounded(path: str | Path, limit: int, what: str = "file") -> BinaryIO:
    """``path`` opened for binary reading after the checks of :func:`read_bounded` (a regular
    file, at most ``limit`` bytes by its size now); a caller streaming it counts the bytes it
    reads against ``limit`` itself (:func:`iter_lines` does)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileRefused("file not found") from None
    except IsADirectoryError:
        raise FileRefused(f"is a directory, expected a {what}") from None
    except OSError as exc:
        raise FileRefused(f"cannot read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
            raise FileRefused(f"is {kind}, expected a {what} (a regular file)")
        if info.st_size > limit:
            raise FileRefused(_too_large(limit, what))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=1 << 20)
    except BaseException:
        os.close(fd)
        raise


def _too_large(limit: int, what: str) -> str:
    return f"is larger than {limit} bytes; a {what} is at most {limit} bytes"


def iter_lines(handle: BinaryIO, limit: int, what: str = "file") -> Iterator[bytes]:
    """The physical lines of ``handle`` (split at ``\\n`` only, each ending with it but the last
    when the file does not end with one), refusing the
    file (:class:`FileRefused`) as soon as more than ``limit`` bytes were read (a file that grew
    after :func:`open_bounded`). Memory: one line."""
    size = 0
    try:
        for line in handle:
            size += len(line)
            if size > limit:
                raise FileRefused(_too_large(limit, what))
            yield line
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise FileRefused(f"is a directory, expected a {what}") from None
        raise FileRefused(f"cannot read: {exc.strerror}") from None


def read_bounded(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file ``path`` if it holds at most ``limit`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileRefused("file not found") from None
    except IsADirectoryError:
        raise FileRefused(f"is a directory, expected a {what}") from None
    except OSError as exc:
        raise FileRefused(f"cannot read: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise FileRefused(f"is {kind}, expected a {what} (a regular file)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise FileRefused(f"is a directory, expected a {what}") from None
        raise FileRefused(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise FileRefused(_too_large(limit, what))
    return b"".join(chunks)
