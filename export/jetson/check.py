"""Check an ONNX graph against what TensorRT's ONNX parser accepts, before building.

Building an engine takes minutes on a Jetson and fails late, with a parser log.
This check reads the graph with the ``onnx`` package only (no TensorRT, no GPU)
and reports, per graph:

* the default-domain opset against the range the parser documents;
* every op type: not importable (error), importable with documented
  restrictions (checked where the graph shows them: Resize/Upsample modes, Pad
  modes, pooling dilations, inputs that must be build-time constants, ...);
* custom domains (``com.microsoft`` contrib ops) that need plugins;
* the network inputs, which of their dimensions are dynamic (each needs an
  optimisation profile: min/opt/max shapes) and their types;
* int64/float64 initializers outside int32/float32 range;
* explicit int8 quantisation (Q/DQ): TensorRT takes only symmetric int8
  (zero point 0, never uint8 inside the network), and a Conv/Gemm/MatMul
  without Q/DQ on its inputs runs in float.

The tables follow onnx-tensorrt's ``docs/operators.md`` for TensorRT 10
(10.0 documents opsets 9-20, 10.15 opsets 9-24).  They describe the parser,
not every kernel: a graph that passes can still fail to build (e.g. a shape
outside a profile), so the device build reports TensorRT's own errors too.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

#: Lowest default-domain opset the TensorRT 10 ONNX parser accepts.
MIN_OPSET = 9
#: Highest opset documented for TensorRT 10.0 (JetPack 6 ships 10.x; 10.15 documents 24).
#: Conservative on purpose: a newer device can raise it with ``--max-opset``.
DEFAULT_MAX_OPSET = 20

#: Op types TensorRT 10's ONNX parser imports (operators.md, "Supported: Y").
SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool
BatchNormalization BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape
Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum
Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If
ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log
LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence
RMSNormalization RNN RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter
ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter ThresholdedRelu Tile
TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

#: Listed as supported only by recent TensorRT 10 releases (10.15's table); a
#: Jetson's JetPack TensorRT may predate them.
RECENT_OPS = frozenset({"Attention", "RMSNormalization", "RotaryEmbedding", "TensorScatter",
                        "BlackmanWindow", "HammingWindow", "HannWindow", "STFT", "DeformConv"})

#: Op types the table marks unsupported ("N"), with a hint where one helps.
UNSUPPORTED_HINTS = {
    "DynamicQuantizeLinear": "dynamic quantisation is ONNX Runtime-only; build from the fp32 "
                             "graph and let TensorRT calibrate (--precision int8)",
    "ConvInteger": "integer-op quantisation (QOperator format) is not importable; use fp32 "
                   "or Q/DQ format",
    "MatMulInteger": "integer-op quantisation (QOperator format) is not importable; use fp32 "
                     "or Q/DQ format",
    "QLinearConv": "QOperator quantisation is not importable; use fp32 or Q/DQ format",
    "QLinearMatMul": "QOperator quantisation is not importable; use fp32 or Q/DQ format",
    "Unique": "", "Compress": "", "BitShift": "", "Det": "", "MaxUnpool": "", "MaxRoiPool": "",
    "Multinomial": "", "Bernoulli": "", "TfIdfVectorizer": "", "StringNormalizer": "",
    "Col2Im": "", "CenterCropPad": "", "AffineGrid": "", "ImageDecoder": "", "DFT": "",
    "MelWeightMatrix": "", "RegexFullMatch": "", "StringConcat": "", "StringSplit": "",
    "NegativeLogLikelihoodLoss": "", "SoftmaxCrossEntropyLoss": "", "Optional": "",
    "OptionalGetElement": "", "OptionalHasElement": "", "BitwiseAnd": "", "BitwiseNot": "",
    "BitwiseOr": "", "BitwiseXor": "", "ConcatFromSequence": "", "SplitToSequence": "",
    "SequenceAt": "", "SequenceConstruct": "", "SequenceEmpty": "", "SequenceErase": "",
    "SequenceInsert": "", "SequenceLength": "", "SequenceMap": "",
}

# Resize restrictions (operators.md, Resize row).
RESIZE_MODES = {"nearest", "linear"}
RESIZE_COORD_MODES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                      "align_corners"}
RESIZE_NEAREST_MODES = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}

#: op -> indices of inputs the parser needs as build-time constants.
CONSTANT_INPUTS = {
    "CumSum": (1,), "TopK": (1,), "OneHot": (1,), "Squeeze": (1,), "Unsqueeze": (1,),
    **{op: (1,) for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
                           "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
                           "ReduceSumSquare")},
}

#: ONNX TensorProto element type -> numpy dtype name, for the types that matter here.
_ELEM = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
         10: "float16", 11: "float64", 16: "bfloat16"}

_INT32 = np.iinfo(np.int32)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_QUANTISED_COMPUTE = ("Conv", "ConvTranspose", "Gemm", "MatMul")

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass(frozen=True)
class Issue:
    """One finding: ``severity`` is ``error`` (the parser or build will fail),
    ``warning`` (it may build but behave differently) or ``info``."""

    severity: str
    code: str
    message: str
    node: str = ""

    def __str__(self) -> str:
        where = f" [{self.node}]" if self.node else ""
        return f"{self.severity.upper():7s} {self.code}{where}: {self.message}"


@dataclass(frozen=True)
class InputInfo:
    """A network input: ``shape`` holds ints for static dims and the dim's name
    (or ``"?"``) for dynamic ones; ``dynamic_axes`` lists the dynamic axes."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @property
    def dynamic_axes(self) -> tuple[int, ...]:
        return tuple(i for i, d in enumerate(self.shape) if not isinstance(d, int))

    def describe(self) -> str:
        return f"{self.name}: {self.dtype}[{','.join(str(d) for d in self.shape)}]"


@dataclass
class CheckReport:
    """What :func:`check_onnx` found in one graph."""

    path: str
    opset: int | None = None
    producer: str = ""
    op_counts: dict[str, int] = field(default_factory=dict)
    inputs: list[InputInfo] = field(default_factory=list)
    outputs: list[InputInfo] = field(default_factory=list)
    quantized: bool = False
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == ERROR]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == WARNING]

    @property
    def ok(self) -> bool:
        """True when nothing would stop TensorRT's parser."""
        return not self.errors

    @property
    def dynamic_inputs(self) -> list[InputInfo]:
        return [i for i in self.inputs if i.dynamic_axes]

    def add(self, severity: str, code: str, message: str, node: str = "") -> None:
        self.issues.append(Issue(severity, code, message, node))

    def format(self) -> str:
        """Human-readable report (what ``--check`` prints)."""
        status = "OK" if self.ok else f"FAILED ({len(self.errors)} error(s))"
        lines = [f"{self.path}: {status}",
                 f"  opset {self.opset}, {sum(self.op_counts.values())} nodes, "
                 f"{len(self.op_counts)} op types"
                 + (", explicit int8 (Q/DQ)" if self.quantized else "")
                 + (f", producer {self.producer}" if self.producer else "")]
        for i in self.inputs:
            dyn = (f"  dynamic axes {list(i.dynamic_axes)} -> needs an optimisation profile"
                   if i.dynamic_axes else "  static")
            lines.append(f"  input  {i.describe()}{dyn}")
        for o in self.outputs:
            lines.append(f"  output {o.describe()}")
        order = {ERROR: 0, WARNING: 1, INFO: 2}
        for issue in sorted(self.issues, key=lambda i: order[i.severity]):
            lines.append(f"  {issue}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"path": self.path, "ok": self.ok, "opset": self.opset,
                "op_counts": dict(self.op_counts), "quantized": self.quantized,
                "inputs": [{"name": i.name, "dtype": i.dtype, "shape": list(i.shape),
                            "dynamic_axes": list(i.dynamic_axes)} for i in self.inputs],
                "issues": [{"severity": i.severity, "code": i.code, "message": i.message,
                            "node": i.node} for i in self.issues]}


@dataclass(frozen=True)
class CheckOptions:
    """Options of :func:`check_onnx`.

    Attributes:
        min_opset, max_opset: the default-domain opset range the target
            TensorRT's parser accepts (defaults: TensorRT 10.0's documented 9-20).
        allow_domains: custom op domains the target has plugins for (their ops
            are then not reported as errors).
    """

    min_opset: int = MIN_OPSET
    max_opset: int = DEFAULT_MAX_OPSET
    allow_domains: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.min_opset <= self.max_opset:
            raise ValueError(f"opset range must satisfy 1 <= min <= max, got "
                             f"{self.min_opset}..{self.max_opset}")


def _dims(value_info) -> tuple[str, tuple[int | str, ...]]:
    t = value_info.type.tensor_type
    dtype = _ELEM.get(t.elem_type, f"onnx-type-{t.elem_type}")
    if not t.HasField("shape"):
        return dtype, ()
    dims: list[int | str] = []
    for d in t.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return dtype, tuple(dims)


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _node_name(node) -> str:
    return node.name or f"{node.op_type}->{node.output[0] if node.output else '?'}"


def check_onnx(source, options: CheckOptions | None = None) -> CheckReport:
    """Check one ONNX graph (a path or a loaded ``onnx.ModelProto``).

    Never raises for what it finds in the graph: every finding is an
    :class:`Issue` in the report (an unreadable file is an ``error`` issue too).
    """
    import onnx
    from onnx import numpy_helper

    options = options or CheckOptions()
    if isinstance(source, onnx.ModelProto):
        model, path = source, "<model>"
    else:
        path = str(source)
        report = CheckReport(path=path)
        if not Path(path).is_file():
            report.add(ERROR, "file", "no such file")
            return report
        try:
            model = onnx.load(path)
        except Exception as exc:  # protobuf DecodeError and friends: not an ONNX file
            report.add(ERROR, "file", f"not a readable ONNX model ({type(exc).__name__}: "
                                      f"{str(exc)[:200]})")
            return report
    report = CheckReport(path=path, producer=" ".join(
        p for p in (model.producer_name, model.producer_version) if p))

    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        report.add(ERROR, "invalid", f"the ONNX checker rejects the graph: "
                                     f"{str(exc).splitlines()[0][:300]}")

    # --- opset and domains ----------------------------------------------------
    domains = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    report.opset = domains.get("ai.onnx")
    if report.opset is None:
        report.add(ERROR, "opset", "the graph imports no default-domain (ai.onnx) opset")
    elif not options.min_opset <= report.opset <= options.max_opset:
        report.add(ERROR, "opset",
                   f"opset {report.opset} is outside {options.min_opset}-{options.max_opset}, "
                   "the range TensorRT's ONNX parser supports (TensorRT 10.0 documents 9-20, "
                   "10.15 documents 9-24); re-export with e.g. opset 17 "
                   "(tf2onnx --opset 17), or pass --max-opset for a newer TensorRT")

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    constants = set(initializers)
    producers = {}
    for node in graph.node:
        for out in node.output:
            producers[out] = node
        if node.op_type == "Constant":
            constants.update(node.output)

    # --- inputs / outputs -------------------------------------------------------
    for vi in graph.input:
        if vi.name in initializers:  # old exporters list weights as inputs too
            continue
        dtype, shape = _dims(vi)
        info = InputInfo(vi.name, dtype, shape)
        report.inputs.append(info)
        if not shape:
            report.add(ERROR, "input-shape", f"input {vi.name!r} has no shape (rank unknown); "
                                             "TensorRT needs every input's rank", vi.name)
        if info.dynamic_axes:
            names = ", ".join(f"axis {a} ({shape[a]})" for a in info.dynamic_axes)
            report.add(INFO, "dynamic", f"input {info.describe()}: dynamic {names}; "
                                        "the engine needs an optimisation profile with "
                                        "min/opt/max shapes for it (--shape or --frame-sizes)",
                       vi.name)
        if dtype in ("float64", "int16", "bfloat16") or dtype.startswith("onnx-type"):
            report.add(ERROR if dtype.startswith("onnx-type") or dtype == "int16" else WARNING,
                       "input-type", f"input {vi.name!r} is {dtype}; TensorRT network inputs "
                                     "are float32/float16/int32/int64/int8/uint8/bool", vi.name)
    for vi in graph.output:
        dtype, shape = _dims(vi)
        report.outputs.append(InputInfo(vi.name, dtype, shape))

    # --- weights ----------------------------------------------------------------
    for t in graph.initializer:
        if t.data_type == 7:  # int64
            arr = numpy_helper.to_array(t)
            if arr.size and (arr.min() < _INT32.min or arr.max() > _INT32.max):
                users = {n.op_type for n in graph.node if t.name in n.input}
                # Slice ends of INT64_MAX ("to the end") are the norm and clamp harmlessly
                benign = users <= {"Slice"}
                report.add(INFO if benign else WARNING, "int64",
                           f"int64 initializer {t.name!r} (used by {sorted(users)}) holds values "
                           "outside int32; TensorRT before 10 casts int64 to int32 and clamps",
                           t.name)
        elif t.data_type == 11:  # float64
            arr = numpy_helper.to_array(t)
            big = bool(arr.size) and float(np.max(np.abs(arr))) > _FLOAT32_MAX
            report.add(WARNING if big else INFO, "float64",
                       f"float64 initializer {t.name!r}: TensorRT casts DOUBLE to float32"
                       + (" and these values overflow it" if big else ""), t.name)

    # --- nodes ------------------------------------------------------------------
    counts: collections.Counter[str] = collections.Counter()
    for node in graph.node:
        domain = node.domain or "ai.onnx"
        op = node.op_type if domain == "ai.onnx" else f"{domain}.{node.op_type}"
        counts[op] += 1
        name = _node_name(node)
        if domain not in ("ai.onnx", "ai.onnx.ml"):
            if domain not in options.allow_domains:
                report.add(ERROR, "custom-op", f"{domain}.{node.op_type} is a custom-domain op: "
                                               "TensorRT needs a plugin for it (ONNX Runtime "
                                               "contrib ops come from ORT's graph optimiser; "
                                               "export without it)", name)
            continue
        if domain == "ai.onnx.ml":
            report.add(ERROR, "unsupported-op", f"ai.onnx.ml.{node.op_type} (classical ML "
                                                "domain) is not supported by TensorRT", name)
            continue
        _check_node(report, node, name, constants, initializers)
    report.op_counts = dict(sorted(counts.items()))

    _check_qdq(report, graph, producers, initializers, constants)
    return report


def _check_node(report: CheckReport, node, name: str, constants: set[str],
                initializers: dict) -> None:
    op = node.op_type
    if op not in SUPPORTED_OPS:
        hint = UNSUPPORTED_HINTS.get(op)
        if hint is None:
            msg = f"{op} is not in TensorRT's ONNX operator table (no importer)"
        else:
            msg = f"{op} is not supported by TensorRT's ONNX parser" + (f": {hint}" if hint else "")
        report.add(ERROR, "unsupported-op", msg, name)
        return
    if op in RECENT_OPS:
        report.add(WARNING, "recent-op", f"{op} is importable only by recent TensorRT 10 "
                                         "releases (10.15's table); JetPack's may lack it", name)

    if op in ("Resize", "Upsample"):
        mode = _attr(node, "mode", "nearest")
        if mode not in RESIZE_MODES:
            report.add(ERROR, "resize-mode", f"{op} mode {mode!r}: TensorRT supports "
                                             f"{sorted(RESIZE_MODES)} (use bilinear)", name)
        if op == "Resize":
            coord = _attr(node, "coordinate_transformation_mode", "half_pixel")
            if coord not in RESIZE_COORD_MODES:
                report.add(ERROR, "resize-coord", f"Resize coordinate_transformation_mode "
                                                  f"{coord!r} is not supported (supported: "
                                                  f"{sorted(RESIZE_COORD_MODES)})", name)
            nearest = _attr(node, "nearest_mode", "round_prefer_floor")
            if mode == "nearest" and nearest not in RESIZE_NEAREST_MODES:
                report.add(ERROR, "resize-nearest", f"Resize nearest_mode {nearest!r} is not "
                                                    "supported", name)
            if int(_attr(node, "antialias", 0) or 0):
                report.add(ERROR, "resize-antialias", "Resize antialias=1 is not supported", name)
            policy = _attr(node, "keep_aspect_ratio_policy", "stretch")
            if policy != "stretch":
                report.add(ERROR, "resize-aspect", f"Resize keep_aspect_ratio_policy {policy!r} "
                                                   "is not supported (only 'stretch')", name)
    elif op == "Pad":
        mode = _attr(node, "mode", "constant")
        if mode != "constant":
            report.add(WARNING, "pad-mode",
                       f"Pad mode {mode!r}: TensorRT 10 imports it as a slice layer with a "
                       "reflect/clamp/wrap sample mode (older TensorRT, e.g. JetPack 4, rejects "
                       "non-constant padding); it does not fuse into the following "
                       "convolution, so it costs a memory pass per use", name)
    elif op == "InstanceNormalization":
        missing = [node.input[i] for i in (1, 2) if len(node.input) > i
                   and node.input[i] not in constants]
        if missing:
            report.add(ERROR, "instancenorm-weights", f"InstanceNormalization scale/bias "
                                                      f"{missing} must be initializers", name)
        report.add(INFO, "instancenorm-fp16",
                   "InstanceNormalization in FP16: statistics over large frames lose "
                   "precision; compare the FP16 engine's output with the fp32 model", name)
    elif op in ("MaxPool", "AveragePool", "LpPool"):
        kernel = _attr(node, "kernel_shape", []) or []
        # 1D pooling (a rank-3 input) is imported too: onnx-tensorrt's poolingHelper
        # unsqueezes it to 2D and squeezes the result back
        if len(kernel) not in (1, 2, 3):
            report.add(ERROR, "pool-rank", f"{op} over {len(kernel)} spatial dims: only 1D, "
                                           "2D or 3D pooling is supported", name)
        dil = _attr(node, "dilations", []) or []
        if any(int(d) != 1 for d in dil):
            report.add(ERROR, "pool-dilation", f"{op} dilations {list(dil)}: must be all ones",
                       name)
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            report.add(ERROR, "maxpool-indices", "MaxPool's Indices output is not supported",
                       name)
    elif op == "TopK" and int(_attr(node, "sorted", 1)) != 1:
        report.add(ERROR, "topk-sorted", "TopK sorted=0 is not supported", name)
    elif op == "LSTM" and (int(_attr(node, "input_forget", 0)) or int(_attr(node, "layout", 0))):
        report.add(ERROR, "lstm-attrs", "LSTM input_forget and layout must be 0", name)
    elif op == "Dropout" and len(node.input) > 2 and node.input[2] not in constants:
        report.add(ERROR, "dropout-training", "Dropout is_training must be an initializer "
                                              "(False)", name)
    elif op == "Constant":
        for attr in ("sparse_value", "value_string", "value_strings"):
            if _attr(node, attr) is not None:
                report.add(ERROR, "constant-attr", f"Constant with {attr} is not supported",
                           name)

    for idx in CONSTANT_INPUTS.get(op, ()):
        if len(node.input) > idx and node.input[idx] and node.input[idx] not in constants:
            report.add(ERROR, "needs-constant",
                       f"{op} input {idx} ({node.input[idx]!r}) must be a build-time constant "
                       "(initializer) for TensorRT", name)


def _zero_point(node, initializers: dict, index: int):
    from onnx import numpy_helper

    if len(node.input) <= index or not node.input[index]:
        return None
    t = initializers.get(node.input[index])
    return None if t is None else numpy_helper.to_array(t)


def _check_qdq(report: CheckReport, graph, producers: dict, initializers: dict,
               constants: set[str]) -> None:
    """Explicit quantisation: what TensorRT requires of Q/DQ pairs and where they sit."""
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
           and (n.domain or "ai.onnx") == "ai.onnx"]
    if not qdq:
        return
    report.quantized = True
    bad_zp, uint8 = [], []
    for n in qdq:
        zp = _zero_point(n, initializers, 2)
        if zp is None:
            continue
        if zp.dtype == np.uint8:
            uint8.append(_node_name(n))
        if np.any(zp != 0):
            bad_zp.append(_node_name(n))
    if uint8:
        report.add(ERROR, "qdq-uint8",
                   f"{len(uint8)} Q/DQ node(s) quantise to uint8 (e.g. {uint8[0]}): TensorRT "
                   "takes uint8 only as a network input/output, never inside the network. "
                   "Build from the fp32 ONNX with --precision int8 (TensorRT calibrates), or "
                   "re-quantise with int8 symmetric activations")
    if bad_zp:
        report.add(ERROR, "qdq-zero-point",
                   f"{len(bad_zp)} Q/DQ node(s) have a non-zero zero point (e.g. {bad_zp[0]}): "
                   "TensorRT supports symmetric quantisation only (zero point 0)")
    for n in qdq:
        axis = _attr(n, "axis", 1)
        scale = initializers.get(n.input[1]) if len(n.input) > 1 else None
        per_channel = scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1
        if n.op_type == "DequantizeLinear" and per_channel and n.input[0] in constants:
            users = [u for u in graph.node if n.output[0] in u.input]
            for u in users:
                want = 1 if u.op_type == "ConvTranspose" else 0
                if u.op_type in ("Conv", "ConvTranspose") and int(axis) != want:
                    report.add(ERROR, "qdq-axis",
                               f"per-channel weight scales on axis {axis} feeding "
                               f"{u.op_type}: TensorRT needs the output-channel axis ({want})",
                               _node_name(n))
    # Placement: a compute op with both data and weight inputs dequantised runs in int8.
    for node in graph.node:
        if node.op_type not in _QUANTISED_COMPUTE:
            continue
        fed = [i for i in node.input[:2] if i]
        dq = [producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
              for i in fed]
        if not all(dq):
            report.add(WARNING, "qdq-placement",
                       f"{node.op_type} has no Q/DQ on input(s) "
                       f"{[i for i, d in zip(fed, dq) if not d]}: it runs in float in an "
                       "explicitly quantised engine", _node_name(node))


def check_many(paths: Iterable[str | Path], options: CheckOptions | None = None
               ) -> list[CheckReport]:
    """Check several graphs (order kept)."""
    return [check_onnx(p, options) for p in paths]


def summarize(reports: Sequence[CheckReport]) -> str:
    """One closing line for the CLI."""
    bad = [r for r in reports if not r.ok]
    if not bad:
        return f"{len(reports)} graph(s) checked: all importable by TensorRT's ONNX parser"
    return (f"{len(bad)} of {len(reports)} graph(s) would fail in TensorRT's ONNX parser: "
            + ", ".join(Path(r.path).name for r in bad))
