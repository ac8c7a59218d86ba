#!/usr/bin/env python3
"""Builds the ONNX fixtures of `runner/tests/onnx.rs` and their reference outputs.

Everything lands in `runner/fixtures/` (committed; every file stays well under 100 KB). The
reference outputs (`*.expected.csv`) are onnxruntime's outputs written in exactly the CSV format
`runner::onnx::Model::predict_csv` writes: a `row` column (0-based) and then one column per output
value, named as the Rust side names them.

Run it from anywhere (it writes next to itself, in ../runner/fixtures):

    python3 -m venv /var/tmp/aiedge-py
    /var/tmp/aiedge-py/bin/pip install numpy scikit-learn skl2onnx onnx onnxruntime
    /var/tmp/aiedge-py/bin/python scripts/make_fixtures.py

Last generated with Python 3.11.7, numpy 2.4.6, scikit-learn 1.9.1, skl2onnx 1.20.0, onnx 1.23.2,
onnxruntime 1.32.0. Re-running with other versions can change the models' bytes and the last digits
of the expected outputs; the Rust tests compare numbers with a tolerance, so that is fine.

The models, and why each is built the way it is:

- `iris_logreg.onnx`: scikit-learn LogisticRegression on iris, converted by skl2onnx with
  `zipmap=False`. That gives the ONNX-ML `LinearClassifier` (plus `Normalizer` and `Cast`,
  depending on the skl2onnx version), which stock tract-onnx 0.23 runs. Outputs
  `output_label` [N] int64 and `output_probability` [N, 3] float.
- `iris_logreg_names.onnx`: the same, trained on the species names, so the label output is a string
  tensor and the class labels live in the `classlabels_strings` attribute (columns `prob_setosa`…).
- `iris_logreg_zipmap.onnx`: skl2onnx's default (`zipmap=True`): ends in a `ZipMap`, which the
  runner drops, so it gives the columns and values of `iris_logreg.onnx`.
- `bad_zipmap_consumed.onnx`: the same with an `Identity` reading the ZipMap's maps; the runner
  cannot drop that ZipMap and must refuse it naming `ZipMap`.
- `diabetes_linreg.onnx`: LinearRegression on the diabetes data set (ONNX-ML `LinearRegressor`),
  one output `variable` [N, 1].
- `tiny_cnn.onnx`: built with onnx.helper: input [N, 1, 4, 4] (16 CSV columns), Conv 3x3 (2
  filters, padding 1), Relu, Flatten, Gemm to 3, Softmax; output `probabilities` [N, 3].
- `bad_truncated.onnx`: the first 100 bytes of `iris_logreg.onnx`.
- `bad_op.onnx`: a valid graph whose only node is `com.example`'s `Frobnicate`.
- `bad_int_input.onnx`: a valid model (Cast then ReduceSum) whose input is int64.
- `bad_two_inputs.onnx`: a valid model (Add) with two float inputs.
"""

import csv
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import sklearn
import skl2onnx
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression

OUT = Path(__file__).resolve().parent.parent / "runner" / "fixtures"
# Opsets tract-onnx 0.23 is tested against (9..18) and the ONNX-ML opset skl2onnx emits.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def fmt(value) -> str:
    """Shortest text that round-trips the float32 (or the integer, or the string)."""
    if isinstance(value, (np.floating, float)):
        return str(np.float32(value))
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode()
    return str(value)


def write_features(path: Path, header, x: np.ndarray) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for row in x.astype(np.float32):
            w.writerow([fmt(v) for v in row])


def write_expected(path: Path, header, columns) -> None:
    """`columns` is a list of per-row sequences, one per output column block."""
    n = len(columns[0])
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for i in range(n):
            row = [str(i)]
            for block in columns:
                cell = block[i]
                if isinstance(cell, np.ndarray):
                    row.extend(fmt(v) for v in cell.reshape(-1))
                else:
                    row.append(fmt(cell))
            w.writerow(row)


def run_ort(model: onnx.ModelProto, x: np.ndarray):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: x.astype(np.float32)})


def save(model: onnx.ModelProto, name: str) -> bytes:
    data = model.SerializeToString()
    (OUT / name).write_bytes(data)
    ops = sorted({f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in model.graph.node})
    print(f"{name}: {len(data)} bytes, ops {ops}")
    return data


def sk_classifier(x, y, zipmap: bool) -> onnx.ModelProto:
    clf = LogisticRegression(max_iter=1000).fit(x, y)
    return to_onnx(
        clf,
        initial_types=[("float_input", FloatTensorType([None, x.shape[1]]))],
        options={id(clf): {"zipmap": zipmap}},
        target_opset=TARGET_OPSET,
    )


def iris() -> None:
    data = load_iris()
    x, y = data.data.astype(np.float32), data.target
    write_features(OUT / "iris.csv", data.feature_names, x)

    model = sk_classifier(x, y, zipmap=False)
    iris_bytes = save(model, "iris_logreg.onnx")
    label, prob = run_ort(model, x)
    header = ["row", "label"] + [f"prob_{c}" for c in range(prob.shape[1])]
    write_expected(OUT / "iris_logreg.expected.csv", header, [label, prob])

    names = data.target_names[y]
    model = sk_classifier(x, names, zipmap=False)
    save(model, "iris_logreg_names.onnx")
    label, prob = run_ort(model, x)
    header = ["row", "label"] + [f"prob_{c}" for c in data.target_names]
    write_expected(OUT / "iris_logreg_names.expected.csv", header, [label, prob])

    zipmap = sk_classifier(x, y, zipmap=True)
    save(zipmap, "iris_logreg_zipmap.onnx")

    # A ZipMap whose maps another node reads: the runner cannot drop it, so it refuses it by name.
    # (Not checked or run: no standard operator takes a sequence of maps.)
    consumed = onnx.ModelProto()
    consumed.CopyFrom(zipmap)
    graph = consumed.graph
    zip_out = next(n for n in graph.node if n.op_type == "ZipMap").output[0]
    graph.node.append(helper.make_node("Identity", [zip_out], ["maps"], name="read_maps"))
    kept = [o for o in graph.output if o.name != zip_out]
    maps = onnx.ValueInfoProto()
    maps.CopyFrom(next(o for o in graph.output if o.name == zip_out))
    maps.name = "maps"
    del graph.output[:]
    graph.output.extend(kept + [maps])
    save(consumed, "bad_zipmap_consumed.onnx")

    (OUT / "bad_truncated.onnx").write_bytes(iris_bytes[:100])
    print("bad_truncated.onnx: 100 bytes")


def diabetes() -> None:
    data = load_diabetes()
    x, y = data.data.astype(np.float32), data.target
    write_features(OUT / "diabetes.csv", data.feature_names, x)
    reg = LinearRegression().fit(x, y)
    model = to_onnx(
        reg,
        initial_types=[("float_input", FloatTensorType([None, x.shape[1]]))],
        target_opset=TARGET_OPSET,
    )
    save(model, "diabetes_linreg.onnx")
    (pred,) = run_ort(model, x)
    assert pred.shape == (x.shape[0], 1), pred.shape
    write_expected(OUT / "diabetes_linreg.expected.csv", ["row", "variable"], [pred[:, 0]])


def tiny_cnn() -> None:
    rng = np.random.default_rng(7)
    w = rng.normal(size=(2, 1, 3, 3)).astype(np.float32)
    b = rng.normal(size=(2,)).astype(np.float32)
    fc_w = rng.normal(size=(32, 3)).astype(np.float32) * 0.5
    fc_b = rng.normal(size=(3,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("Flatten", ["relu"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "tiny_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        initializer=[
            onnx.numpy_helper.from_array(w, "conv_w"),
            onnx.numpy_helper.from_array(b, "conv_b"),
            onnx.numpy_helper.from_array(fc_w, "fc_w"),
            onnx.numpy_helper.from_array(fc_b, "fc_b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    save(model, "tiny_cnn.onnx")

    x = rng.uniform(-1, 1, size=(25, 16)).astype(np.float32)
    write_features(OUT / "tiny_cnn.csv", [f"px{i}" for i in range(16)], x)
    (prob,) = run_ort(model, x.reshape(-1, 1, 4, 4))
    header = ["row"] + [f"probabilities_{i}" for i in range(3)]
    write_expected(OUT / "tiny_cnn.expected.csv", header, [prob])


def bad_models() -> None:
    # An operator nobody implements: valid protobuf, valid graph structure.
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], name="frob_1", domain="com.example")],
        "bad_op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    save(model, "bad_op.onnx")

    # A valid model whose input is int64 (onnxruntime runs it; the runner must refuse it).
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["codes"], ["codes_f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["codes_f", "axes"], ["total"], keepdims=1),
        ],
        "bad_int_input",
        [helper.make_tensor_value_info("codes", TensorProto.INT64, ["N", 4])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N", 1])],
        initializer=[onnx.numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"codes": np.ones((2, 4), dtype=np.int64)})[0].tolist() == [[4], [4]]
    save(model, "bad_int_input.onnx")

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])],
        "bad_two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4]),
        ],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    save(model, "bad_two_inputs.onnx")


def main() -> None:
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
        f"skl2onnx {skl2onnx.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    iris()
    diabetes()
    tiny_cnn()
    bad_models()
    for path in sorted(OUT.iterdir()):
        assert path.stat().st_size < 100_000, f"{path.name} is too big for a fixture"


if __name__ == "__main__":
    main()
