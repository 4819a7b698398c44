"""Episodes written into Minari's hdf5 layout through h5py's public low-level API, one copy call each.

Minari's own writer costs about 17 KiB and a few milliseconds per episode, and slows as the
file grows (chunked, resizable datasets; a metadata rewrite per update). This writer produces
the groups, datasets, dtypes and attributes that `minari.load_dataset` reads
(`episode_{i}/{observations/<key>, actions, rewards, terminations, truncations, infos}`, with
`id`, `total_steps` and the flattened reset `options/...` as attributes), but stores small
arrays in the object header (HDF5's compact layout) and larger ones (long text contexts, whose
T+1 observation rows repeat each other) as one gzip-compressed chunk, which h5py decompresses
transparently on read: a 512-token text sample takes about 2x its packed size, not 130x.

Minari's layout needs 3 groups, 6 datasets and 4+ attributes per episode, and each h5py call
costs a few microseconds on top of HDF5's own work. So each episode shape gets a template
episode, built once in an in-memory HDF5 file with its datasets and attributes kept open, and
the whole group is copied into the file with one `H5Ocopy` (`h5py.h5o.copy`), which HDF5 does in
C. An episode is written into its template only where it differs from the one before it: the
`id` always, the other datasets and the option attributes when their bytes or values changed
(end flags, rewards, lengths and prompts often repeat), `total_steps` never (it is part of the
shape). String attributes are rewritten in place (HDF5 frees the old string). Rewriting a
template's string attributes between many copies makes each later write slower (measured: about
1.6x by the second 20,000 episodes), so the template file is replaced by a fresh one every
`TEMPLATE_EPISODES` episodes, which keeps the cost per episode flat for that part. The copy itself
still grows slowly with the file (about 1.3x from the first to the third 20,000 episodes).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import h5py
import numpy as np
from h5py import h5a, h5d, h5g, h5o, h5p, h5s, h5t

COMPACT_MAX_BYTES = 512  # arrays up to this size live in their object header; larger ones are compressed
GZIP_LEVEL = 4
TEMPLATE_EPISODES = 4096  # episodes written through one in-memory template file before a fresh one replaces it
_STR = h5py.string_dtype("utf-8")
_INT64 = np.dtype(np.int64)
_files = itertools.count()  # in-memory template files need distinct names within a process


def check_text(value: str, where: str) -> None:
    """Refuse text HDF5 cannot store: a variable-length string ends at its first NUL (h5py and Minari refuse it)."""
    if "\x00" in value:
        raise ValueError(f"{where} contains a NUL character ('\\x00') at position {value.index(chr(0))}: HDF5 "
                         "strings cannot hold it (h5py and Minari refuse it too); remove it from the text")


class _Template:
    """One episode shape in the in-memory file: its group, open datasets and attributes, filled per episode.

    Each dataset and option attribute remembers the bytes it holds, and is written only when an
    episode's value differs (end flags, lengths, rewards and prompts often repeat within a shape);
    `total_steps` is part of the shape, so it is written once.
    """

    def __init__(self, parent: h5g.GroupID, name: bytes, arrays: list[tuple[str, np.ndarray]],
                 options: dict[str, str | int], steps: int) -> None:
        gcpl = h5p.create(h5p.GROUP_CREATE)
        gcpl.set_obj_track_times(False)  # no timestamps: smaller headers, and equal data gives equal files
        scalar = h5s.create(h5s.SCALAR)
        string, int64 = h5t.py_create(_STR, logical=True), h5t.py_create(_INT64)
        self.group = h5g.create(parent, name, gcpl=gcpl)
        self.int64 = int64
        self.id = h5a.create(self.group, b"id", int64, scalar)
        h5a.create(self.group, b"total_steps", int64, scalar).write(np.array(steps, _INT64), mtype=int64)
        subgroups = {"": self.group, "observations/": h5g.create(self.group, b"observations", gcpl=gcpl)}
        self.datasets = []
        for path, values in arrays:
            folder, _, leaf = path.rpartition("/")
            tid = h5t.py_create(values.dtype, logical=True)
            dataset = h5d.create(subgroups[folder + "/" if folder else ""], leaf.encode(), tid,
                                 h5s.create_simple(values.shape), dcpl=_layout(values))
            self.datasets.append((dataset, tid))
        h5g.create(self.group, b"infos", gcpl=gcpl)  # Minari writes an empty infos group and reads it back as {}
        # rewritten in place: HDF5 frees a variable-length string's old value when the attribute is written again
        self.options = [(key, h5a.create(self.group, f"options/{key}".encode(), string if text else int64, scalar),
                         _STR if text else _INT64)
                        for key, text in ((key, isinstance(value, str)) for key, value in options.items())]
        self.held: list[object] = [None] * (len(self.datasets) + len(self.options))

    def fill(self, index: int, arrays: list[tuple[str, np.ndarray]], options: dict[str, str | int]) -> None:
        """Write one episode's values into the template: the id always, the rest where it changed."""
        held = self.held
        for i, ((dataset, tid), (_, values)) in enumerate(zip(self.datasets, arrays)):
            raw = values.tobytes()
            if raw != held[i]:
                dataset.write(h5s.ALL, h5s.ALL, values, mtype=tid)
                held[i] = raw
        self.id.write(np.array(index, _INT64), mtype=self.int64)
        for i, (key, attr, dtype) in enumerate(self.options, len(self.datasets)):
            value = options[key]
            if value != held[i]:
                attr.write(np.array(value, dtype))  # h5py converts Python strings to HDF5 strings only without mtype
                held[i] = value


def _layout(values: np.ndarray) -> h5p.PropDCID:
    """Compact (in the object header) for small arrays; one gzip-compressed chunk for larger ones."""
    plist = h5p.create(h5p.DATASET_CREATE)
    plist.set_obj_track_times(False)
    if values.nbytes <= COMPACT_MAX_BYTES:
        plist.set_layout(h5d.COMPACT)
    else:  # one chunk per array (HDF5 >= 1.10 indexes it without a B-tree), deflated
        plist.set_chunk(values.shape)
        if values.ndim == 1:
            plist.set_shuffle()  # byte planes of int64/float64 runs are mostly zeros
        plist.set_deflate(GZIP_LEVEL)
    return plist


class EpisodeFile:
    """An hdf5 file being filled with episodes in Minari's layout; `write` one episode at a time, then `close`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.file = h5py.File(path, "w", libver=("v110", "latest"))
        self._scratch: h5py.File | None = None
        self._templates: dict[tuple, _Template] = {}
        self._copy = h5p.create(h5p.OBJECT_COPY)
        self.episodes = 0
        self.steps = 0

    def write(self, observations: dict[str, np.ndarray], actions: np.ndarray, rewards: np.ndarray,
              terminations: np.ndarray, truncations: np.ndarray, options: dict[str, str | int]) -> None:
        """Append one episode (ids are sequential), with the dtypes Minari's writer would keep."""
        index = self.episodes
        for key, value in options.items():
            if isinstance(value, str):
                check_text(value, f"episode {index}'s {key}")
        arrays = [*((f"observations/{key}", np.ascontiguousarray(value)) for key, value in observations.items()),
                  ("actions", np.ascontiguousarray(actions, dtype=np.int64)),
                  ("rewards", np.ascontiguousarray(rewards, dtype=np.float64)),
                  ("terminations", np.ascontiguousarray(terminations, dtype=bool)),
                  ("truncations", np.ascontiguousarray(truncations, dtype=bool))]
        shape = (tuple((name, values.shape, values.dtype) for name, values in arrays),
                 tuple((key, isinstance(value, str)) for key, value in options.items()))
        if index % TEMPLATE_EPISODES == 0:
            self._fresh_templates()
        template = self._templates.get(shape)
        if template is None:
            template = self._templates[shape] = _Template(self._scratch.id, f"t{len(self._templates)}".encode(),
                                                          arrays, options, len(actions))
        template.fill(index, arrays, options)
        h5o.copy(template.group, b".", self.file.id, f"episode_{index}".encode(), copypl=self._copy)
        self.episodes += 1
        self.steps += len(actions)

    def _fresh_templates(self) -> None:
        """Start a new in-memory template file: one whose string attributes were rewritten between many copies
        makes each later write and copy slower (measured: 1.6x by the second 20,000 episodes), a fresh one keeps them flat."""
        self._templates.clear()
        if self._scratch is not None:
            self._scratch.close()
        self._scratch = h5py.File(f"textrl-episode-templates-{next(_files)}", "w", driver="core",
                                  backing_store=False, libver=("v110", "latest"))

    def close(self) -> None:
        """Close the file (flushing it) and drop the templates."""
        self._templates.clear()
        if self._scratch is not None:
            self._scratch.close()
        self.file.close()
