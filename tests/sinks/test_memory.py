import numpy as np
import pytest

from edge.frame import FACE, Detections, DroppedFrame, Frame, MaskedFrame
from edge.sinks.memory import MemorySink


def masked() -> MaskedFrame:
    frame = Frame(np.full((4, 5, 3), 9, np.uint8), "cam", 1, 0, 0, "a")
    det = Detections(np.array([[0, 0, 2, 2]], np.float32), [0.9], [FACE])
    return MaskedFrame(frame, np.array([[0, 0, 3, 3]], np.int32), det, "masked", {"detect": 1.0})


def dropped() -> DroppedFrame:
    return DroppedFrame.of(Frame(np.zeros((4, 5, 3), np.uint8), "cam", 2, 0, 0), "deadline")


def test_keeps_outcomes_in_order_and_counts_them():
    sink = MemorySink()
    assert sink.send(masked()) and sink.send(dropped())
    assert [type(i) for i in sink.items] == [MaskedFrame, DroppedFrame]
    assert len(sink.masked) == 1 and sink.dropped[0].reason == "deadline"
    assert sink.stats() == {"sent": 1, "sent_dropped_records": 1, "dropped_closed": 0}


def test_later_in_place_changes_do_not_alter_what_was_sent():
    item = masked()
    sink = MemorySink()
    sink.send(item)
    item.frame.image[:] = 255
    item.regions[:] = 0
    item.detections.xyxy[:] = 0
    item.timings_ms["detect"] = 99.0
    kept = sink.items[0]
    assert (kept.frame.image == 9).all()
    assert kept.regions.tolist() == [[0, 0, 3, 3]]
    assert kept.detections.xyxy.tolist() == [[0, 0, 2, 2]]
    assert kept.timings_ms == {"detect": 1.0}


def test_dropped_record_timings_are_copied():
    item = dropped()
    sink = MemorySink()
    sink.send(item)
    item.timings_ms["late"] = 1.0
    assert sink.items[0].timings_ms == {}


@pytest.mark.parametrize("bad", [masked().frame, np.zeros((2, 2, 3), np.uint8), None])
def test_refuses_anything_but_outcomes(bad):
    sink = MemorySink()
    with pytest.raises(TypeError):
        sink.send(bad)
    assert sink.items == []


def test_after_close_sends_are_refused_and_counted():
    sink = MemorySink()
    sink.close()
    assert sink.closed
    assert sink.send(masked()) is False
    assert sink.items == [] and sink.stats()["dropped_closed"] == 1
