"""Range and choice checks shared by the components' parameter types.

Each raises ValueError whose message starts with the field's name, so the config loader only has
to put the table in front (`mask.margin: must be within 0.0..2.0, got 3.0`).
"""
from __future__ import annotations


def at_least(obj: object, name: str, low: float) -> None:
    value = getattr(obj, name)
    if not value >= low:  # written so that NaN fails too
        raise ValueError(f"{name}: must be >= {low}, got {value!r}")


def within(obj: object, name: str, low: float, high: float) -> None:
    value = getattr(obj, name)
    if not low <= value <= high:
        raise ValueError(f"{name}: must be within {low}..{high}, got {value!r}")


def one_of(obj: object, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    if value not in choices:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(choices)}")


def each_within(obj: object, name: str, low: float, high: float) -> None:
    """Every entry of a list field within low..high (NaN fails)."""
    values = getattr(obj, name)
    if any(not low <= v <= high for v in values):
        raise ValueError(f"{name}: each must be within {low}..{high}, got {list(values)}")


def at_most_items(obj: object, name: str, high: int) -> None:
    """A list field of at most `high` entries: each entry costs a pass (memory and start-up time)."""
    values = getattr(obj, name)
    if len(values) > high:
        raise ValueError(f"{name}: at most {high} entries, got {len(values)}")


def one_line(e: BaseException) -> str:
    """An error's message folded onto one line (a user sees one line per problem, never a block)."""
    return " ".join(part.strip() for part in str(e).splitlines() if part.strip()) or type(e).__name__
