"""Model rewriting with onnx: preprocessing moved into the graph, and fp16 conversion.

`prepend_preprocess` makes an NCHW float model accept the raw frame, uint8 [N,H,W,3] BGR (or
[H,W,3]), and do cast, channel order, optional resize and zero-padding to the network's multiple
inside the graph. On a GPU that means one uint8 upload per frame (a quarter of the bytes of a
float32 blob) and no CPU-side blob work at all. The numbers it computes match
`edge.detect.backends.host.host_blob` exactly at scale 1; at other scales the resize is ONNX linear
(half-pixel) in float instead of OpenCV's fixed-point uint8 resize (INTER_AREA when shrinking),
so pixels differ by interpolation rounding and the decoded boxes by a fraction of a pixel.

`append_filter` moves the score threshold into the graph: the model then returns only the rows
that pass it (index, score, regression row) and one checksum of its raw outputs, so a 1080p frame
downloads a few kilobytes instead of megabytes of heads and the host decodes tens of rows, not
hundreds of thousands.

`to_fp16` casts float initializers to float16 and wraps the graph in Casts so its I/O stays
float32; `fp16_cached` keeps the result on disk next to the source model, keyed by its sha256.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.detect.filters import CHECK_OUTPUT, FILTER_INPUT, FRAME_INPUT, PREFIX, FilterGroup, filter_output_names

log = logging.getLogger(__name__)

MIN_OPSET = 11  # dynamic Pad (pads as an input), Resize with sizes, Round
_P = "edge_pre/"  # prefix of every name this module adds, so nothing collides with the model's own
FP16_VERSION = 1  # bump when to_fp16 changes: cached conversions of older versions are not reused


class GraphError(ValueError):
    """A model this module cannot rewrite (wrong input layout, unsupported opset...)."""


def check(model: onnx.ModelProto) -> None:
    """onnx.checker on a copy whose shapeless graph outputs get their rank from shape inference.

    `set_input_dims` clears the output shapes of fixed-size models (LPD-YuNet) so onnxruntime
    accepts other sizes; onnxruntime is fine with that, the checker insists on a shape.
    """
    shapeless = [o.name for o in model.graph.output if not o.type.tensor_type.HasField("shape")]
    if shapeless:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        inferred = {o.name: o for o in onnx.shape_inference.infer_shapes(model).graph.output}
        for out in model.graph.output:
            found = inferred.get(out.name)
            if out.name in shapeless and found is not None and found.type.tensor_type.HasField("shape"):
                for k in range(len(found.type.tensor_type.shape.dim)):
                    out.type.tensor_type.shape.dim.add().dim_param = f"{_P}{out.name}_{k}"
    onnx.checker.check_model(model)


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise GraphError("model imports no default-domain opset")


def _with_min_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """CenterFace is opset 9 (static Pad, no Resize); its plain conv ops convert to 11 unchanged."""
    if default_opset(model) >= MIN_OPSET:
        return model
    from onnx import version_converter

    return version_converter.convert_version(model, MIN_OPSET)


def _float_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise GraphError(f"expected one image input, the model has {[i.name for i in inputs]}")
    elem = inputs[0].type.tensor_type.elem_type
    if elem not in (TensorProto.FLOAT, TensorProto.FLOAT16):
        raise GraphError(f"input {inputs[0].name} is {TensorProto.DataType.Name(elem)}, expected FLOAT or FLOAT16")
    return inputs[0]


class _Builder:
    """Collects the preprocessing nodes and constants under the module's name prefix."""

    def __init__(self, opset: int, prefix: str = _P) -> None:
        self.opset, self.prefix = opset, prefix
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{self.prefix}{stem}_{self._n}"

    def const(self, stem: str, value: np.ndarray) -> str:
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str, output: str | None = None, **attrs) -> str:
        out = output or self.name(stem)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name(op_type), **attrs))
        return out

    def unsqueeze0(self, x: str) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.const("axes", np.array([0], np.int64))], "batched")
        return self.op("Unsqueeze", [x], "batched", axes=[0])

    def slice1d(self, x: str, start: int, end: int, stem: str) -> str:
        return self.op("Slice", [x, self.const("start", np.array([start], np.int64)),
                                 self.const("end", np.array([end], np.int64))], stem)


def _resize_sizes(b: _Builder, x: str, scale: float) -> str:
    """[N, C, max(1, round(H*scale)), max(1, round(W*scale))] in double, as the numpy path rounds.

    ONNX Round is half-to-even like Python's round(); double keeps ties such as 721*1.5 exact.
    """
    shape = b.op("Shape", [x], "shape")
    hw = b.op("Cast", [b.slice1d(shape, 2, 4, "hw")], "hw_f64", to=TensorProto.DOUBLE)
    scaled = b.op("Round", [b.op("Mul", [hw, b.const("scale", np.array(scale, np.float64))], "hw_scaled")], "hw_round")
    scaled = b.op("Max", [scaled, b.const("one", np.array(1.0, np.float64))], "hw_min1")
    nc = b.slice1d(shape, 0, 2, "nc")
    return b.op("Concat", [nc, b.op("Cast", [scaled], "hw_i64", to=TensorProto.INT64)], "sizes", axis=0)


def _pad_to_multiple(b: _Builder, x: str, multiple: int, output: str, value: float = 0.0) -> str:
    hw = b.slice1d(b.op("Shape", [x], "shape"), 2, 4, "hw")
    m = b.const("multiple", np.array(multiple, np.int64))
    pad_hw = b.op("Mod", [b.op("Sub", [m, b.op("Mod", [hw, m], "rem")], "gap"), m], "pad_hw")
    pads = b.op("Concat", [b.const("pads_head", np.zeros(6, np.int64)), pad_hw], "pads", axis=0)
    return b.op("Pad", [x, pads, b.const("pad_value", np.array(value, np.float32))], "padded", output=output,
                mode="constant")


def prepend_preprocess(model: onnx.ModelProto | bytes, *, channels: str = "BGR", scale: float = 1.0,
                       multiple: int = 32, batched: bool = True, pad_value: float = 0.0) -> onnx.ModelProto:
    """A copy of `model` whose only input is the raw frame: uint8 [N,H,W,3] BGR ([H,W,3] if not batched).

    Inside the graph: channel order (`channels` is what the model wants: "BGR" or "RGB"), cast to
    the model's float type, NHWC -> NCHW, linear resize by `scale` (skipped at 1), padding of H and W
    up to `multiple` with `pad_value` (0; YOLOX was trained with 114). Values stay 0..255, as every
    model family here expects.
    """
    if channels not in ("BGR", "RGB"):
        raise GraphError(f"channels {channels!r}, expected BGR or RGB")
    if scale <= 0 or multiple < 1:
        raise GraphError(f"scale must be > 0 and multiple >= 1, got {scale}, {multiple}")
    if isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    else:
        model = onnx.ModelProto.FromString(model.SerializeToString())
    model = _with_min_opset(model)
    target = _float_input(model)
    float_type = target.type.tensor_type.elem_type
    b = _Builder(default_opset(model))

    x = FRAME_INPUT if batched else b.unsqueeze0(FRAME_INPUT)
    if channels == "RGB":
        x = b.op("Gather", [x, b.const("rgb", np.array([2, 1, 0], np.int64))], "rgb", axis=3)
    # transposed while still uint8: a quarter of the bytes to shuffle
    x = b.op("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    x = b.op("Cast", [x], "float", to=TensorProto.FLOAT)
    if scale != 1.0:
        empty = b.const("empty", np.zeros(0, np.float32))
        x = b.op("Resize", [x, empty, empty, _resize_sizes(b, x, scale)], "resized",
                 mode="linear", coordinate_transformation_mode="half_pixel")
    if float_type == TensorProto.FLOAT16:
        _pad_to_multiple(b, x, multiple, b.name("padded32"), pad_value)
        padded = b.nodes[-1].output[0]
        b.op("Cast", [padded], "fp16", output=target.name, to=TensorProto.FLOAT16)
    else:
        _pad_to_multiple(b, x, multiple, target.name, pad_value)

    graph = model.graph
    frame_dims = ["N", "H", "W", 3] if batched else ["H", "W", 3]
    new_input = helper.make_tensor_value_info(FRAME_INPUT, TensorProto.UINT8, frame_dims)
    kept = [i for i in graph.input if i.name != target.name]
    del graph.input[:]
    graph.input.extend([new_input, *kept])
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend([*b.nodes, *nodes])
    graph.initializer.extend(b.inits)
    check(model)
    return model


# --- score filter ------------------------------------------------------------------------------------

def append_filter(model: onnx.ModelProto | bytes, groups: tuple[FilterGroup, ...]) -> onnx.ModelProto:
    """A copy of `model` whose outputs are, per group, the rows scoring at least the `score_floor` input.

    New input: `score_floor`, float [1]. New outputs: per group index int64 [K] (row in the flattened
    output), score float [K] and rows float [K, rows_width]; and `edge_filter/check`, the float sum of
    every raw output the groups read. A non-finite check means a non-finite value somewhere in those
    outputs (sums propagate NaN and inf), which the decoder must treat as a bad model output: inside
    the graph a NaN score could otherwise just fail the comparison and vanish. The original outputs
    are no longer graph outputs.
    """
    if isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    else:
        model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    outputs = {o.name: o for o in graph.output}
    used = {name for g in groups for name in [g.rows, *(s[0] for s in g.score)]}
    missing = used - set(outputs)
    if missing:
        raise GraphError(f"model has no output(s) {sorted(missing)}; it has {sorted(outputs)}")
    for name in used:
        if outputs[name].type.tensor_type.elem_type != TensorProto.FLOAT:
            raise GraphError(f"output {name} is not float32")
    b = _Builder(default_opset(model), PREFIX)
    tables: dict[tuple[str, int], str] = {}

    def table(name: str, width: int) -> str:
        if (name, width) not in tables:
            tables[name, width] = b.op("Reshape", [name, b.const("shape", np.array([-1, width], np.int64))], "table")
        return tables[name, width]

    zero, one = b.const("zero", np.array(0.0, np.float32)), b.const("one", np.array(1.0, np.float32))
    new_outputs = []
    for g in groups:
        score = None
        for name, width, column in g.score:
            col = b.op("Gather", [table(name, width), b.const("col", np.array(column, np.int64))], "col", axis=1)
            col = b.op("Clip", [col, zero, one], "clipped")
            score = col if score is None else b.op("Mul", [score, col], "product")
        score = b.op("Sqrt", [score], "score")
        keep = b.op("Not", [b.op("Less", [score, FILTER_INPUT], "below")], "keep")
        index_name, score_name, rows_name = filter_output_names(g.name)
        index = b.op("Reshape", [b.op("NonZero", [keep], "nonzero"), b.const("flat", np.array([-1], np.int64))],
                     "index", output=index_name)
        b.op("Gather", [score, index], "kept_score", output=score_name, axis=0)
        b.op("Gather", [table(g.rows, g.rows_width), index], "kept_rows", output=rows_name, axis=0)
        new_outputs += [helper.make_tensor_value_info(index_name, TensorProto.INT64, [f"{PREFIX}{g.name}_K"]),
                        helper.make_tensor_value_info(score_name, TensorProto.FLOAT, [f"{PREFIX}{g.name}_K"]),
                        helper.make_tensor_value_info(rows_name, TensorProto.FLOAT,
                                                      [f"{PREFIX}{g.name}_K", g.rows_width])]
    sums = [b.op("ReduceSum", [name], "sum", keepdims=0) for name in sorted(used)]
    check_sum = sums[0]
    for other in sums[1:]:
        check_sum = b.op("Add", [check_sum, other], "check")
    b.op("Identity", [check_sum], "check", output=CHECK_OUTPUT)
    new_outputs.append(helper.make_tensor_value_info(CHECK_OUTPUT, TensorProto.FLOAT, []))

    graph.input.append(helper.make_tensor_value_info(FILTER_INPUT, TensorProto.FLOAT, [1]))
    graph.node.extend(b.nodes)
    graph.initializer.extend(b.inits)
    del graph.output[:]
    graph.output.extend(new_outputs)
    check(model)
    return model


# --- fp16 -------------------------------------------------------------------------------------------

# Inputs that ONNX requires to stay float32 whatever the data type: (op type, input index).
_FLOAT32_INPUTS = {("Resize", 2), ("Upsample", 1)}


def _float32_only_names(graph: onnx.GraphProto) -> set[str]:
    names = set()
    for node in graph.node:
        for idx, name in enumerate(node.input):
            if (node.op_type, idx) in _FLOAT32_INPUTS or (node.op_type == "Resize" and idx == 1):
                names.add(name)  # Resize roi: left float32 too, it is empty or tiny
    return names


def _tensor_to_fp16(t: onnx.TensorProto) -> onnx.TensorProto:
    arr = numpy_helper.to_array(t).astype(np.float32)
    # values beyond fp16's range would become inf; saturate them instead
    arr = np.clip(arr, -65504.0, 65504.0).astype(np.float16)
    return numpy_helper.from_array(arr, t.name)


def to_fp16(model: onnx.ModelProto | bytes) -> onnx.ModelProto:
    """A float16 copy of `model` whose graph inputs and outputs stay float32 (Casts at the edges).

    Every float32 source of values (initializers, Constant nodes, Casts to float) becomes float16, so
    the types of everything downstream follow; inputs ONNX pins to float32 (Resize scales) are kept.
    """
    if isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    else:
        model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    keep32 = _float32_only_names(graph)
    initializers = {i.name for i in graph.initializer}
    for i, t in enumerate(graph.initializer):
        if t.data_type == TensorProto.FLOAT and t.name not in keep32:
            graph.initializer[i].CopyFrom(_tensor_to_fp16(t))
    for node in graph.node:
        _node_to_fp16(node, keep32)

    edge_nodes = []
    rename: dict[str, str] = {}
    for inp in graph.input:
        if inp.name in initializers or inp.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        rename[inp.name] = f"{inp.name}{_P}fp16"
        edge_nodes.append(helper.make_node("Cast", [inp.name], [rename[inp.name]], name=f"{_P}cast_in_{inp.name}",
                                           to=TensorProto.FLOAT16))
    for node in graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
    tail_nodes = []
    for out in graph.output:
        if out.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        inner = f"{out.name}{_P}fp16"
        for node in graph.node:
            node.output[:] = [inner if n == out.name else n for n in node.output]
            node.input[:] = [inner if n == out.name else n for n in node.input]
        tail_nodes.append(helper.make_node("Cast", [inner], [out.name], name=f"{_P}cast_out_{out.name}",
                                           to=TensorProto.FLOAT))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend([*edge_nodes, *nodes, *tail_nodes])
    del graph.value_info[:]  # element types inside changed; stale float32 annotations would be wrong
    check(model)
    return model


def _node_to_fp16(node: onnx.NodeProto, keep32: set[str]) -> None:
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
            attr.i = TensorProto.FLOAT16
        elif (node.op_type in ("Constant", "ConstantOfShape") and attr.type == onnx.AttributeProto.TENSOR
              and attr.t.data_type == TensorProto.FLOAT and not set(node.output) & keep32):
            attr.t.CopyFrom(_tensor_to_fp16(attr.t))


def fp16_cache_path(cache_dir: str | Path, source_sha256: str) -> Path:
    """<cache>/<source sha256>/derived/fp16-v<N>.onnx: next to the model it was made from."""
    return Path(cache_dir) / source_sha256 / "derived" / f"fp16-v{FP16_VERSION}.onnx"


def fp16_cached(model_bytes: bytes, source_sha256: str, cache_dir: str | Path) -> bytes:
    """The fp16 conversion of `model_bytes`, from the disk cache when a verified copy is there.

    The cache file has a `.sha256` sidecar written after it; a copy that does not match its sidecar
    (truncated write, disk error) is discarded and rebuilt. The conversion is deterministic, so a
    rebuilt file is the same bytes. An unwritable cache only costs the conversion time.
    """
    path = fp16_cache_path(cache_dir, source_sha256)
    sidecar = path.with_suffix(".sha256")
    try:
        data, expected = path.read_bytes(), sidecar.read_text().strip()
        if hashlib.sha256(data).hexdigest() == expected:
            return data
        log.warning("fp16 cache %s does not match its checksum; rebuilding it", path)
    except OSError:
        pass
    data = to_fp16(model_bytes).SerializeToString()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, data)
        _atomic_write(sidecar, hashlib.sha256(data).hexdigest().encode())
        log.info("fp16 conversion of %s… cached at %s", source_sha256[:12], path)
    except OSError as e:
        log.warning("cannot cache the fp16 model at %s: %s", path, e)
    return data


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
