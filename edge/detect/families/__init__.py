"""Decoders, one module per model family: raw network outputs -> boxes, scores and quads in input pixels.

A model card's `family` names its decoder: edge/detect/families/<family>.py, defining DECODER_API;
FILTER_GROUPS is the layout of the in-graph score threshold (`()`: the family has none, its outputs are
decoded on the host), and a family with groups also defines `filtered_candidates`. Adding a family
is adding that module; its card names it and nothing else changes.
"""
from __future__ import annotations

import importlib
import re
from types import ModuleType

from edge.detect.families import centerface, lpd_yunet, yolox, yunet

FAMILIES: dict[str, ModuleType] = {"yunet": yunet, "centerface": centerface, "lpd_yunet": lpd_yunet, "yolox": yolox}
DECODER_API = ("candidates", "MULTIPLE", "CHANNELS", "PAD_VALUE", "FILTER_GROUPS")  # what a family module must define
_FAMILY_RE = re.compile(r"[a-z][a-z0-9_]*")


class UnknownFamily(ValueError):
    """No decoder module for a model card's family."""


def family_module(name: str) -> ModuleType:
    """The decoder of family `name`: a built-in, or the module edge/detect/families/<name>.py defining DECODER_API."""
    if name in FAMILIES:
        return FAMILIES[name]
    if not _FAMILY_RE.fullmatch(name or ""):
        raise UnknownFamily(f"family {name!r} is not a valid module name")
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise  # the decoder exists but one of its own imports is missing: say that, not "unknown"
        raise UnknownFamily(f"unknown detector family {name!r}: no decoder module edge/detect/families/{name}.py "
                            f"(built-in: {', '.join(sorted(FAMILIES))})") from None
    missing = [a for a in DECODER_API if not hasattr(module, a)]
    if not missing and module.FILTER_GROUPS and not hasattr(module, "filtered_candidates"):
        missing.append("filtered_candidates (it has FILTER_GROUPS)")
    if missing:
        raise UnknownFamily(f"edge/detect/families/{name}.py is not a decoder: it lacks {', '.join(missing)}")
    FAMILIES[name] = module
    return module
