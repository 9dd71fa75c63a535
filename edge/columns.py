"""Parallel arrays, one row per object: the one take / concat for detections, candidates and tracks."""
from __future__ import annotations

import dataclasses

import numpy as np


class Columns:
    """A dataclass of equal-length arrays (its fields, in order); a field may be None (the column is absent).

    `take` and `concat` build the result without running the subclass's __post_init__: rows of
    objects that were checked when they were made need no second check when they are selected
    or joined. Where some parts of a concat lack an optional column and others have it, the
    rows of the parts without it are NaN.
    """

    __slots__ = ()

    def __len__(self) -> int:
        return len(getattr(self, dataclasses.fields(self)[0].name))

    @classmethod
    def _assemble(cls, values: dict):
        out = object.__new__(cls)
        for name, value in values.items():
            object.__setattr__(out, name, value)
        return out

    def take(self, index):
        """The rows at `index` (integer indices or a boolean mask), every column alike."""
        values = {}
        for f in dataclasses.fields(self):
            col = getattr(self, f.name)
            values[f.name] = None if col is None else col[index]
        return self._assemble(values)

    @classmethod
    def concat(cls, parts: list):
        """The rows of every part, in order; an empty list (or all parts empty) gives the empty instance."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls()
        if len(parts) == 1:
            return parts[0]
        values = {}
        for f in dataclasses.fields(cls):
            cols = [getattr(p, f.name) for p in parts]
            if all(c is None for c in cols):
                values[f.name] = None
                continue
            tail = next(c for c in cols if c is not None).shape[1:]
            values[f.name] = np.concatenate([c if c is not None else np.full((len(p), *tail), np.nan, np.float32)
                                             for p, c in zip(parts, cols)])
        return cls._assemble(values)
