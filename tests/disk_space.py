"""A full disk injected at the lowest writes torch and safetensors make from Python, for every machine.

`FullDisk` lets ``budget`` bytes through, then the write that would exceed it writes what fits and raises
``OSError(ENOSPC)``, as a full file system does. torch's writer is given a Python file whose ``write`` does this
(the path torch itself takes for non-ASCII file names); safetensors' ``serialize_file`` writes the bytes that fit
under the real name, then raises.
"""

import errno
import os

import safetensors.torch
import torch.serialization


def _data_len(spec):
    return spec["data_len"] if isinstance(spec, dict) else spec.data_len


class _CountedFile:
    def __init__(self, path, disk):
        self._file, self._disk = open(path, "wb"), disk

    def write(self, data):
        data = bytes(data)
        room = self._disk.take(len(data))
        if room < len(data):
            self._file.write(data[:room])
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._file.write(data)

    def flush(self):
        self._file.flush()

    def close(self):
        self._file.close()


class FullDisk:
    """Installed with pytest's ``monkeypatch``; ``enabled`` can be switched on during a run."""

    def __init__(self, monkeypatch, budget: int, enabled: bool = True):
        self.left, self.enabled, self.refused = budget, enabled, []
        real_writer, real_serialize = torch.serialization._open_zipfile_writer, safetensors.torch.serialize_file
        disk = self

        def zipfile_writer(name_or_buffer):
            if isinstance(name_or_buffer, (str, os.PathLike)):
                return torch.serialization._open_zipfile_writer_buffer(_CountedFile(name_or_buffer, disk))
            return real_writer(name_or_buffer)

        def serialize_file(tensors, filename, metadata=None):
            size = sum(int(_data_len(spec)) for spec in tensors.values()) + 1024  # the data and a header
            room = disk.take(size)
            if room < size:
                with open(filename, "wb") as handle:
                    handle.write(b"\0" * room)
                raise OSError(errno.ENOSPC, "No space left on device")
            real_serialize(tensors, filename, metadata=metadata)

        monkeypatch.setattr(torch.serialization, "_open_zipfile_writer", zipfile_writer)
        monkeypatch.setattr(safetensors.torch, "serialize_file", serialize_file)

    def take(self, size: int) -> int:
        """How many of ``size`` bytes fit (all when disabled)."""
        if not self.enabled:
            return size
        room = min(size, self.left)
        self.left -= room
        if room < size:
            self.refused.append(size)
        return room
