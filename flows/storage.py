"""Tune's storage location, a local folder or any URI pyarrow's filesystems accept (``s3://``,
``gs://``, a folder every node mounts): the few operations rnnbench does on it itself, through
the same filesystem layer Ray uses, so a URI works wherever a folder does."""

from __future__ import annotations

import pyarrow.fs


def resolve(location: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The filesystem and the path within it."""
    if "://" not in location:
        return pyarrow.fs.LocalFileSystem(), location
    return pyarrow.fs.FileSystem.from_uri(location)


def exists(location: str) -> bool:
    fs, path = resolve(location)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def delete(location: str) -> None:
    """Remove a folder and everything in it; nothing happens when it is not there."""
    fs, path = resolve(location)
    if fs.get_file_info(path).type == pyarrow.fs.FileType.Directory:
        fs.delete_dir(path)


def listing(location: str) -> list[str]:
    """Every file below ``location``, as paths relative to it."""
    fs, path = resolve(location)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return []
    found = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True))
    return sorted(info.path[len(path.rstrip("/")) + 1:] for info in found
                  if info.type == pyarrow.fs.FileType.File)


def read_bytes(location: str) -> bytes:
    fs, path = resolve(location)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def folders(location: str) -> list[str]:
    """The names of the folders directly in ``location`` (none when it is not there)."""
    fs, path = resolve(location)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return []
    return sorted(info.base_name for info in fs.get_file_info(pyarrow.fs.FileSelector(path))
                  if info.type == pyarrow.fs.FileType.Directory)


def size(location: str) -> int:
    """Bytes in the files below ``location``."""
    fs, path = resolve(location)
    info = fs.get_file_info(path)
    if info.type == pyarrow.fs.FileType.File:
        return info.size or 0
    if info.type != pyarrow.fs.FileType.Directory:
        return 0
    return sum(i.size or 0 for i in fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True))
               if i.type == pyarrow.fs.FileType.File)
