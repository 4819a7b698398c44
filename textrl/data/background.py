"""An `EpisodeFile` filled on a second thread, so HDF5's work overlaps collecting and encoding episodes.

The HDF5 calls of `textrl.data.hdf5` run without Python's GIL, so on two cores the writer thread
and the caller (rolling out or tokenizing the next episodes, packing them) run at once. The
writer holds h5py's global lock for each episode, so an h5py call elsewhere waits instead of
entering the (not thread-safe) HDF5 library at the same time.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

from h5py._objects import phil  # h5py's lock around every HDF5 call

from textrl.data.hdf5 import EpisodeFile

BATCH = 256  # episodes handed to the writer at a time
DEPTH = 8  # batches waiting at most (bounds the memory held)


class BackgroundEpisodeFile:
    """`write` queues an episode for `EpisodeFile.write` on the writer thread; `close` finishes or abandons it.

    An error on the writer thread is raised by the next `write` or by `close`. The thread is a
    daemon, so it never keeps a dying process alive.
    """

    def __init__(self, path: Path) -> None:
        self.file = EpisodeFile(path)
        self._queue: queue.Queue[list[tuple] | None] = queue.Queue(maxsize=DEPTH)
        self._pending: list[tuple] = []
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="textrl-hdf5-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (batch := self._queue.get()) is not None:
                for episode in batch:
                    if self._stop.is_set():
                        return
                    with phil:
                        self.file.write(*episode)
        except BaseException as e:  # handed to the caller's thread
            self._error = e

    def _send(self, item: list[tuple] | None) -> None:
        while True:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError("the hdf5 writer thread stopped") from self._error
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def write(self, *episode: Any) -> None:
        """Queue one episode (the arguments of `EpisodeFile.write`); its arrays must not change afterwards."""
        self._pending.append(episode)
        if len(self._pending) >= BATCH:
            batch, self._pending = self._pending, []
            self._send(batch)

    def _abandon(self) -> None:
        self._stop.set()
        try:
            self._queue.put_nowait(None)  # wakes a writer waiting for work; a full queue means it is busy
        except queue.Full:
            pass
        self._thread.join()

    def close(self, finish: bool = True) -> None:
        """Write what is queued (`finish`) or stop after the episode being written; then close the file."""
        try:
            if finish:
                if self._pending:
                    self._send(self._pending)
                self._send(None)
                self._thread.join()
            else:
                self._abandon()
        except BaseException:  # e.g. Ctrl-C while waiting: stop the writer before the file closes
            self._abandon()
            raise
        finally:
            self.file.close()  # h5py takes `phil` here, so it waits for the episode in flight
        if finish and self._error is not None:
            raise RuntimeError("writing the hdf5 file failed") from self._error
