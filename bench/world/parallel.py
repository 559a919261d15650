"""Running one stage of the world's training in a second process while the first trains another
(the vocoder does not depend on the flow network), and splitting the rendering of the world
between processes. Each child runs single-threaded and hands its result back through a private
temporary file (mkstemp: mode 0600) that only this run writes and reads, with pickle: the
results are our own objects (rendered clips, tensors, state dicts), not weight files.

Forked, not spawned: the child inherits the data already in memory. Fork is safe here because
the parent runs torch with one thread (no OpenMP pool exists yet to be copied half-alive).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

import torch


def _child(fn: Callable, args: tuple, path: str) -> None:
    torch.set_num_threads(1)
    try:
        with open(path, "wb") as f:
            pickle.dump(fn(*args), f, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException:  # report in the parent, with the child's traceback
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


class Job:
    """``fn(*args)`` in a forked process; :meth:`result` waits and returns its value."""

    def __init__(self, fn: Callable, *args: Any, name: str = "job"):
        self.name = name
        fd, self._path = tempfile.mkstemp(prefix=f"world_{name}_", suffix=".pickle")
        os.close(fd)
        self._proc = multiprocessing.get_context("fork").Process(
            target=_child, args=(fn, args, self._path), name=name, daemon=True)
        self._proc.start()

    def result(self) -> Any:
        self._proc.join()
        try:
            if self._proc.exitcode != 0:
                raise RuntimeError(f"world {self.name} process failed (exit code "
                                   f"{self._proc.exitcode}; its traceback is above)")
            with open(self._path, "rb") as f:
                return pickle.load(f)
        finally:
            Path(self._path).unlink(missing_ok=True)


def run(fn: Callable, *args: Any, parallel: bool, name: str = "job"):
    """A :class:`Job` when ``parallel``, else a finished stand-in with the same ``result()``."""
    if parallel:
        return Job(fn, *args, name=name)
    value = fn(*args)
    return type("Done", (), {"result": staticmethod(lambda: value)})()
