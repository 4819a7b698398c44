"""Atomic file and directory writes, so an interrupted write never leaves a half-written result.

Files and folders get the permissions the user's umask allows (like `open` and `mkdir`), not the
private 0600/0700 of `tempfile`. A folder that already exists is replaced by swapping it with the
new one in a single `renameat2(RENAME_EXCHANGE)` call where the filesystem supports it, so a
reader never finds the folder missing. A manifest records each file's sha256, so a load can tell
a damaged file from a good one and name it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

__all__ = [
    "atomic_directory",
    "atomic_write_text",
    "make_temp_dir",
    "clean_leftovers",
    "write_manifest",
    "verify_manifest",
    "DamagedFileError",
    "MANIFEST",
    "open_no_follow",
]

MANIFEST = "manifest.json"
_LEFTOVER = re.compile(r"^\.(.+)\.[^.]+\.(tmp|old)$")


class DamagedFileError(ValueError):
    """A saved file does not match its manifest or cannot be parsed; the message names the file."""


def open_no_follow(path: str | os.PathLike, flags: int, what: str) -> int:
    """`os.open(path, flags | O_NOFOLLOW)`: a file of a run folder is never written through a symbolic link,
    which could point at any file of the user's (a link planted there is refused with a clear error)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise OSError(errno.ELOOP, f"{path} is a symbolic link (to {os.readlink(path)}): the {what} is never "
                                   "written through a link, which could overwrite any file. Remove the link "
                                   "and run again") from None


def read_json_mapping(path: str | os.PathLike, remedy: str = "") -> dict[str, Any]:
    """A JSON file that holds a mapping; a truncated, garbled or non-mapping file is a DamagedFileError
    naming it, followed by `remedy` (what to do about it)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping, got {type(data).__name__}")
    except (ValueError, UnicodeDecodeError) as e:
        raise DamagedFileError(f"{path} is damaged ({e}){remedy}") from None
    return data


def current_umask() -> int:
    """The process's umask, read without changing it where /proc allows (it is process-wide state)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status", encoding="ascii") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temp_dir(parent: Path, prefix: str, suffix: str = "") -> Path:
    """A fresh uniquely named folder in `parent` with the permissions `mkdir` would give (0777 & ~umask)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    os.chmod(path, 0o777 & ~current_umask())
    return path


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it takes the place of `path` in one rename.

    On an exception the temporary folder is removed and an existing `path` stays as it was. An
    existing `path` is swapped with the new folder atomically (RENAME_EXCHANGE); on filesystems
    without it the old folder is moved aside first, and `clean_leftovers` puts it back if the
    process dies in between.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(final.parent, f".{final.name}.", ".tmp")
    try:
        yield tmp
        _settle_tree(tmp)
        if final.exists() and _exchange(tmp, final):
            pass  # tmp now holds the old folder, removed below
        elif final.exists():
            old = make_temp_dir(final.parent, f".{final.name}.", ".old")
            os.rmdir(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def clean_leftovers(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary folders and files an interrupted atomic write left in `folder`.

    A `.NAME.*.old` folder whose `NAME` is missing is the old copy of a folder that was being
    replaced when the process died: it is moved back. Returns the names removed or restored.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    done = []
    for entry in sorted(folder.iterdir()):
        m = _LEFTOVER.match(entry.name)
        if not m:
            continue
        target = folder / m.group(1)
        if m.group(2) == "old" and entry.is_dir() and not target.exists():
            os.replace(entry, target)
        elif entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        done.append(entry.name)
    return done


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename (0666 & ~umask, like `open`)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _settle_tree(root: Path) -> None:
    """Flush every file under `root` to disk before it is renamed into place, with umask permissions.

    Some writers (safetensors among them) create private 0600 files; a saved folder should be as
    readable as any file the user creates.
    """
    mode = 0o666 & ~current_umask()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, in hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _manifest_files(root: Path) -> list[str]:
    """Files under `root` a manifest covers; a subfolder with its own manifest counts as that one file."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        here = Path(dirpath)
        if here != root and MANIFEST in files:
            out.append((here / MANIFEST).relative_to(root).as_posix())
            dirs.clear()
            continue
        dirs.sort()
        out += [(here / f).relative_to(root).as_posix() for f in sorted(files) if here != root or f != MANIFEST]
    return out


def write_manifest(root: str | os.PathLike) -> None:
    """Record the sha256 of every file under `root` in `root/manifest.json` (write it last)."""
    root = Path(root)
    files = {name: file_sha256(root / name) for name in _manifest_files(root)}
    atomic_write_text(root / MANIFEST, json.dumps({"sha256": files}, indent=0))


def verify_manifest(root: str | os.PathLike, what: str = "folder") -> Optional[dict[str, str]]:
    """Check every file listed in `root/manifest.json`; a missing or altered one is a `DamagedFileError`.

    Returns the recorded digests, or None for a folder saved without a manifest (it is not checked).
    """
    root = Path(root)
    links = [Path(d) / n for d, dirs, files in os.walk(root) for n in (*dirs, *files) if (Path(d) / n).is_symlink()]
    if links:
        raise DamagedFileError(f"{links[0]} is a symbolic link (to {os.readlink(links[0])}): a saved {what} holds "
                               "plain files only, and a link could make it read any file. Replace the link with "
                               "the file it points to, or save the folder again")
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text())["sha256"]
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise TypeError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise DamagedFileError(f"{path} is damaged (not a valid manifest): the {what} cannot be verified. "
                               "Restore it from a copy or save it again") from None
    for name in files:
        parts = Path(name).parts
        if not name or Path(name).is_absolute() or ".." in parts or "\\" in name:
            raise DamagedFileError(f"{path} lists {name!r}, a path that leaves the {what} {root}: a manifest "
                                   "names files inside its folder only. The folder was altered: save it again")
    for name, digest in files.items():
        file = root / name
        if not file.is_file():
            raise DamagedFileError(f"{file} is missing: the {what} {root} is damaged (its manifest lists it). "
                                   "Restore it from a copy or save it again")
        if file_sha256(file) != digest:
            raise DamagedFileError(f"{file} is damaged: its sha256 does not match {MANIFEST} of the {what} "
                                   f"{root}. Restore it from a copy or save it again")
    return files
