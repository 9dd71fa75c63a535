"""The int8 gate: the evaluation (edge.eval.evaluate) of fp32 and int8 under one config, and the rule they must meet.

Rule (issue 6): the int8 model's overall protected share may be at most 1 point below fp32's, and
no size bucket holding at least 100 ground-truth objects may lose more than 2 points.
"""
from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path

OVERALL_POINTS = 1.0
BUCKET_POINTS = 2.0
MIN_BUCKET_OBJECTS = 100
DATASET_OF_CLASS = {"face": "faces", "plate": "plates"}


@dataclass(frozen=True)
class GateResult:
    passed: bool
    failures: tuple[str, ...] = ()
    deltas: dict = field(default_factory=dict)  # points, int8 - fp32: "overall" and every bucket

    def message(self) -> str:
        if self.passed:
            return "gate passed: " + ", ".join(f"{k} {v:+.2f} pt" for k, v in self.deltas.items())
        return "gate FAILED: " + "; ".join(self.failures)


def _points(share: float | None) -> float | None:
    return None if share is None else 100.0 * share


def check_gate(fp32: dict, int8: dict, *, overall_points: float = OVERALL_POINTS,
               bucket_points: float = BUCKET_POINTS, min_objects: int = MIN_BUCKET_OBJECTS) -> GateResult:
    """Compare two edge.eval.evaluate results (same images, same config but the model)."""
    if fp32["objects"] != int8["objects"]:
        raise ValueError(f"results are not on the same set: {fp32['objects']} vs {int8['objects']} objects")
    failures, deltas = [], {}
    a, b = _points(fp32["protected_share"]), _points(int8["protected_share"])
    if a is not None and b is not None:
        deltas["overall"] = round(b - a, 2)
        if a - b > overall_points:
            failures.append(f"overall protected share {b:.2f}% vs fp32 {a:.2f}% "
                            f"(drop {a - b:.2f} > {overall_points:g} pt)")
    for name, bucket in fp32["buckets"].items():
        other = int8["buckets"][name]
        a, b = _points(bucket["share"]), _points(other["share"])
        if a is None or b is None:
            continue
        deltas[name] = round(b - a, 2)
        if bucket["objects"] >= min_objects and a - b > bucket_points:
            failures.append(f"bucket {name} ({bucket['objects']} objects) {b:.2f}% vs fp32 {a:.2f}% "
                            f"(drop {a - b:.2f} > {bucket_points:g} pt)")
    return GateResult(not failures, tuple(failures), deltas)


def gate_configs(cfg, class_name: str, int8_name: str, int8_card: Path, model_dir: Path, work_dir: Path):
    """(fp32 config, int8 config): identical but for detect.<class>.model; the int8 card sits beside the project's."""
    from edge.models.registry import default_cards_dir

    cards = Path(work_dir) / "cards"
    cards.mkdir(parents=True, exist_ok=True)
    source_cards = Path(cfg.models.cards_dir) if cfg.models.cards_dir else default_cards_dir()
    for card in source_cards.glob("*.toml"):
        shutil.copy(card, cards / card.name)
    shutil.copy(int8_card, cards / Path(int8_card).name)
    models = dataclasses.replace(cfg.models, cards_dir=str(cards), mirrors=(*cfg.models.mirrors, str(model_dir)))
    base = dataclasses.replace(cfg, models=models)
    cls_cfg = base.detect.get(class_name)
    int8_cfg = dataclasses.replace(base, detect=base.detect.with_class(class_name,
                                                                       dataclasses.replace(cls_cfg, model=int8_name)))
    return base, int8_cfg


def evaluate_config(cfg, class_name: str, items) -> dict:
    """edge.eval.evaluate's own measurement of one config on the class's annotated set."""
    from edge.eval.evaluate import evaluate, for_dataset, pipeline_for
    from edge.progress import track

    cfg = for_dataset(cfg, DATASET_OF_CLASS[class_name])
    return evaluate(pipeline_for(cfg).process, track(items, f"gate {cfg.detect.get(class_name).model}"))
