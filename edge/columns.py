"""Parallel arrays, one row per object: the one take / concat for detections, candidates and tracks."""
from __future__ import annotations

import dataclasses

import numpy as np


class Columns:
    """A dataclass of equal-length arrays (its fields, in order); a field may be None (the column is absent).

    `take` and `concat` build the result without running the subclass's __post_init__: rows of
    objects that were checked when they were made need no second check when they are selected
    or joined. Where some parts of a concat lack an optional column and others have it, the
    rows of the parts without it are NaN. A concat of one non-empty part (or of empty parts
    only) is that part itself: the containers are never modified in place.
    """

    __slots__ = ()

    def __len__(self) -> int:
        return len(getattr(self, dataclasses.fields(self)[0].name))

    def take(self, index):
        """The rows at `index` (integer indices or a boolean mask), every column alike."""
        out = object.__new__(type(self))
        for f in dataclasses.fields(self):
            col = getattr(self, f.name)
            object.__setattr__(out, f.name, None if col is None else col[index])
        return out

    @classmethod
    def concat(cls, parts: list):
        """The rows of every part, in order; no parts (or only empty ones) give an empty instance."""
        rows = []
        for p in parts:
            if len(p):
                rows.append(p)
        if len(rows) <= 1:
            return rows[0] if rows else parts[0] if parts else cls()
        out = object.__new__(cls)
        for f in dataclasses.fields(cls):
            cols = []
            tail = None
            for p in rows:
                col = getattr(p, f.name)
                cols.append(col)
                if col is not None:
                    tail = col.shape[1:]
            if tail is not None:
                for k, p in enumerate(rows):
                    if cols[k] is None:
                        cols[k] = np.full((len(p), *tail), np.nan, np.float32)
            object.__setattr__(out, f.name, None if tail is None else np.concatenate(cols))
        return out
