#!/usr/bin/env python3
"""Builds the ONNX model zoo of `runner/tests/zoo.rs` and `runner/examples/onnx_bench.rs`.

The zoo is every common scikit-learn model exported with skl2onnx (default options, and for
classifiers also `zipmap=False`), pipelines with scalers, imputation and PCA, and two small
PyTorch-style networks built with onnx.helper, trained on scikit-learn's bundled data sets (iris,
breast cancer, digits, diabetes). Each model's reference outputs are onnxruntime's, written in the
CSV format `runner::onnx::Model::predict_csv` writes (`row`, `label`, `prob_<class>`, ... or one
column per output value).

It lands in `$AIEDGE_ZOO` (default `/var/tmp/aiedge-zoo`), which is NOT committed: the models are
rebuilt from the data sets, so nothing binary lives in git. Usually run through `scripts/zoo.sh`,
which sets up the Python environment first. Re-running is quick: the zoo carries a stamp (this
script's hash and the package versions) and is rebuilt only when the stamp differs.

Layout of the zoo directory:

- `manifest.tsv`: one line per model: `name`, `input csv`, `twin` (the zipmap=False twin of a
  ZipMap classifier, else `-`), `bench` (the bench CSV for the benchmark, else `-`), `ops`.
- `<name>.onnx`, `<name>.expected.csv`; the inputs `data_<set>.csv` (test rows) and
  `bench_<set>.csv` (20 000 rows for the benchmark: the data set resampled with a little noise).
- `stamp`: what the zoo was built from.
"""

import csv
import hashlib
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import sklearn
import skl2onnx
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import SVC, SVR, LinearSVC
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

# The same CSV number format as the fixtures (this directory is on sys.path when run as a script).
from make_fixtures import fmt


def _bools_as_ints(make_attribute):
    """skl2onnx 1.20 writes HistGradientBoosting's `nodes_missing_value_tracks_true` with some
    bools among the integers, which onnx >= 1.17 refuses ("Expected an int, got a boolean"); the ONNX attribute is
    ints, so give it ints."""

    def patched(key, value, *args, **kwargs):
        if isinstance(value, (list, tuple)) and any(isinstance(v, (bool, np.bool_)) for v in value):
            value = [int(v) for v in value]
        return make_attribute(key, value, *args, **kwargs)

    return patched


helper.make_attribute = _bools_as_ints(helper.make_attribute)

ZOO = Path(os.environ.get("AIEDGE_ZOO", "/var/tmp/aiedge-zoo"))
BENCH_ROWS = 20_000
# Rows per data set in the test inputs: enough to cover every class and branch, few enough that
# `cargo test` (a debug build) runs the whole zoo in seconds.
TEST_ROWS = 300


def versions() -> str:
    return (
        f"python {sys.version.split()[0]}, numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
        f"skl2onnx {skl2onnx.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}"
    )


def stamp() -> str:
    # make_fixtures.py too: its fmt() writes the zoo's numbers.
    sources = Path(__file__).read_bytes() + (Path(__file__).parent / "make_fixtures.py").read_bytes()
    digest = hashlib.sha256(sources).hexdigest()[:16]
    return f"make_zoo.py {digest}; {versions()}\n"




def write_csv(path: Path, header, rows) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


# --- data sets -----------------------------------------------------------------------------------


class DataSet:
    """Training data, the test rows (written to `data_<name>.csv`) and the bench rows."""

    def __init__(self, name: str, x: np.ndarray, y: np.ndarray, names=None, nan_fraction=0.0):
        rng = np.random.default_rng(sum(name.encode()))
        x = x.astype(np.float32)
        if nan_fraction:
            # Missing values, for imputers and HistGradientBoosting's missing-value branches.
            mask = rng.random(x.shape) < nan_fraction
            x = x.copy()
            x[mask] = np.nan
        self.name, self.x, self.y, self.names = name, x, y, names
        pick = rng.permutation(len(x))[: min(TEST_ROWS, len(x))]
        self.test = x[np.sort(pick)]
        # Bench rows: resampled rows with 1% noise, so tree paths vary like real data.
        rows = rng.integers(0, len(x), BENCH_ROWS)
        scale = np.nanstd(x, axis=0, keepdims=True) * 0.01
        self.bench = (x[rows] + rng.normal(size=(BENCH_ROWS, x.shape[1])) * scale).astype(np.float32)
        self.bench_written = False

    @property
    def features(self) -> int:
        return self.x.shape[1]

    def labels(self) -> np.ndarray:
        """The class names as labels (string classes)."""
        return np.asarray(self.names)[self.y]

    def write(self) -> None:
        header = [f"f{i}" for i in range(self.features)]
        write_csv(ZOO / f"data_{self.name}.csv", header, ([fmt(v) for v in r] for r in self.test))

    def write_bench(self) -> str:
        if not self.bench_written:
            header = [f"f{i}" for i in range(self.features)]
            rows = ([fmt(v) for v in r] for r in self.bench)
            write_csv(ZOO / f"bench_{self.name}.csv", header, rows)
            self.bench_written = True
        return f"bench_{self.name}.csv"


def datasets() -> dict:
    iris, bc, digits, diab = load_iris(), load_breast_cancer(), load_digits(), load_diabetes()
    return {
        "iris": DataSet("iris", iris.data, iris.target, iris.target_names),
        "bc": DataSet("bc", bc.data, bc.target, bc.target_names),
        "bcnan": DataSet("bcnan", bc.data, bc.target, bc.target_names, nan_fraction=0.05),
        "digits": DataSet("digits", digits.data, digits.target),
        "diabetes": DataSet("diabetes", diab.data, diab.target),
        "diabnan": DataSet("diabnan", diab.data, diab.target, nan_fraction=0.05),
    }


# --- reference outputs ---------------------------------------------------------------------------


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run_ort(model: onnx.ModelProto, x: np.ndarray):
    sess = session(model)
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else -1 for d in inp.shape]
    return sess.run(None, {inp.name: x.reshape(shape)})


def expected_classifier(outputs, classes):
    """`row,label,prob_<class>...` from a classifier's (label, probabilities) outputs, where the
    probabilities are a [N, C] array or ZipMap's list of {class: probability}."""
    label, prob = outputs[0], outputs[1]
    if isinstance(prob, list):
        prob = np.array([[d[c] for c in classes] for d in prob], dtype=np.float32)
    names = classes if prob.shape[1] == len(classes) else range(prob.shape[1])
    header = ["row", "label"] + [f"prob_{c}" for c in names]
    rows = [[str(i), fmt(label[i])] + [fmt(v) for v in prob[i]] for i in range(len(label))]
    return header, rows


def expected_plain(model: onnx.ModelProto, outputs):
    """One column per output value: `name` for one value per row, else `name_<i>`."""
    header, blocks = ["row"], []
    for info, value in zip(model.graph.output, outputs):
        value = np.asarray(value)
        flat = value.reshape(value.shape[0], -1)
        if value.ndim == 1 or flat.shape[1] == 1:
            header.append(info.name)
        else:
            header.extend(f"{info.name}_{i}" for i in range(flat.shape[1]))
        blocks.append(flat)
    n = blocks[0].shape[0]
    rows = [[str(i)] + [fmt(v) for b in blocks for v in b[i]] for i in range(n)]
    return header, rows


# --- the zoo -------------------------------------------------------------------------------------

MANIFEST = []


def ops_of(model: onnx.ModelProto) -> str:
    return " ".join(sorted({n.op_type for n in model.graph.node}))


def save(name: str, model: onnx.ModelProto, data: DataSet, header, rows, twin="-", bench=False):
    (ZOO / f"{name}.onnx").write_bytes(model.SerializeToString())
    write_csv(ZOO / f"{name}.expected.csv", header, rows)
    bench_csv = data.write_bench() if bench else "-"
    MANIFEST.append([name, f"data_{data.name}.csv", twin, bench_csv, ops_of(model)])
    size = (ZOO / f"{name}.onnx").stat().st_size
    print(f"  {name}: {size} bytes, {ops_of(model)}")


def final_step(est):
    return est.steps[-1][1] if isinstance(est, Pipeline) else est


def convert(est, data: DataSet, **options) -> onnx.ModelProto:
    opts = {id(final_step(est)): options} if options else None
    return to_onnx(
        est,
        initial_types=[("float_input", FloatTensorType([None, data.features]))],
        options=opts,
    )


def classifier(name, est, data: DataSet, strings=False, bench=False, offset=None):
    """Trains `est`, exports it with the default options (a ZipMap at the end) and with
    zipmap=False, and saves both with onnxruntime's outputs on the test rows. `offset`: integer
    labels `y * 10 + offset` instead of 0, 1, …"""
    y = data.labels() if strings else data.y if offset is None else data.y * 10 + offset
    est.fit(data.x, y)
    classes = list(final_step(est).classes_)
    default = convert(est, data)
    if not any(n.op_type == "ZipMap" for n in default.graph.node):
        # LinearSVC and SVC without probabilities give scores, never a ZipMap.
        header, rows = expected_classifier(run_ort(default, data.test), classes)
        save(name, default, data, header, rows, bench=bench)
        return
    plain = convert(est, data, zipmap=False)
    header, rows = expected_classifier(run_ort(plain, data.test), classes)
    twin = f"{name}_nozipmap"
    save(twin, plain, data, header, rows, bench=bench)
    zheader, zrows = expected_classifier(run_ort(default, data.test), classes)
    assert zheader == header and zrows == rows, f"{name}: ZipMap and its twin disagree"
    save(name, default, data, zheader, zrows, twin=twin)


def regressor(name, est, data: DataSet, bench=False):
    est.fit(data.x, data.y)
    model = convert(est, data)
    header, rows = expected_plain(model, run_ort(model, data.test))
    save(name, model, data, header, rows, bench=bench)


def classifiers(d: dict) -> None:
    iris, bc, bcnan, digits = d["iris"], d["bc"], d["bcnan"], d["digits"]
    lr = lambda: LogisticRegression(max_iter=5000)  # noqa: E731
    classifier("iris_logreg", lr(), iris, bench=True)
    classifier("iris_logreg_str", lr(), iris, strings=True)
    classifier("bc_logreg", make_pipeline(StandardScaler(), lr()), bc, bench=True)
    classifier("bc_logreg_str", make_pipeline(StandardScaler(), lr()), bc, strings=True)
    classifier("digits_pca_logreg", make_pipeline(PCA(16, random_state=0), lr()), digits, bench=True)

    classifier("iris_linsvc", LinearSVC(), iris)
    # (LinearSVC in a Pipeline fails to convert in skl2onnx 1.20: it passes a zipmap option.)
    classifier("bc_linsvc_str", LinearSVC(C=0.01, max_iter=5000), bc, strings=True)
    classifier("iris_svc", SVC(probability=True, random_state=0), iris, bench=True)
    classifier("iris_svc_str", SVC(probability=True, random_state=0), iris, strings=True)
    classifier("bc_svc", make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)), bc)
    classifier("iris_svc_noprob", SVC(), iris)

    classifier("iris_dt", DecisionTreeClassifier(random_state=0), iris)
    classifier("bc_dt_str", DecisionTreeClassifier(max_depth=6, random_state=0), bc, strings=True)
    rf = lambda: RandomForestClassifier(n_estimators=30, max_depth=10, random_state=0)  # noqa: E731
    classifier("iris_rf", rf(), iris, bench=True)
    classifier("iris_rf_str", rf(), iris, strings=True)
    classifier("bc_rf", rf(), bc, bench=True)
    classifier("bc_rf_str", rf(), bc, strings=True)
    classifier("digits_rf", rf(), digits, bench=True)
    classifier("iris_rf_ints", rf(), iris, offset=5)
    et = lambda: ExtraTreesClassifier(n_estimators=30, max_depth=10, random_state=0)  # noqa: E731
    classifier("iris_et", et(), iris)
    classifier("bc_et", et(), bc)
    gb = lambda: GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0)  # noqa: E731
    classifier("iris_gb", gb(), iris, bench=True)
    classifier("bc_gb", gb(), bc, bench=True)
    classifier("bc_gb_str", gb(), bc, strings=True)
    classifier("bc_gb_ints", gb(), bc, offset=3)
    classifier("iris_logreg_ints", lr(), iris, offset=1)
    hgb = lambda: HistGradientBoostingClassifier(max_iter=30, random_state=0)  # noqa: E731
    classifier("iris_hgb", hgb(), iris, bench=True)
    classifier("bc_hgb", hgb(), bc, bench=True)
    classifier("bcnan_hgb", hgb(), bcnan)
    classifier("digits_hgb", HistGradientBoostingClassifier(max_iter=10, random_state=0), digits)

    mlp = lambda: MLPClassifier(hidden_layer_sizes=(16,), max_iter=2000, random_state=0)  # noqa: E731
    classifier("iris_mlp", mlp(), iris, bench=True)
    classifier("iris_mlp_str", mlp(), iris, strings=True)
    classifier("bc_minmax_mlp", make_pipeline(MinMaxScaler(), mlp()), bc, bench=True)
    classifier("bc_minmax_mlp_str", make_pipeline(MinMaxScaler(), mlp()), bc, strings=True)
    classifier("iris_knn", KNeighborsClassifier(), iris, bench=True)
    classifier("iris_knn_str", KNeighborsClassifier(), iris, strings=True)
    classifier("bc_std_knn", make_pipeline(StandardScaler(), KNeighborsClassifier()), bc)

    imputed_rf = make_pipeline(SimpleImputer(), StandardScaler(), rf())
    classifier("bcnan_imputer_rf", imputed_rf, bcnan)
    imputed_lr = make_pipeline(SimpleImputer(strategy="median"), MinMaxScaler(), lr())
    classifier("bcnan_imputer_logreg_str", imputed_lr, bcnan, strings=True)


def regressors(d: dict) -> None:
    diab, diabnan = d["diabetes"], d["diabnan"]
    regressor("diabetes_linreg", LinearRegression(), diab, bench=True)
    regressor("diabetes_ridge", Ridge(), diab)
    regressor("diabetes_dt", DecisionTreeRegressor(max_depth=8, random_state=0), diab)
    regressor("diabetes_rf", RandomForestRegressor(30, max_depth=10, random_state=0), diab, bench=True)
    regressor("diabetes_gb", GradientBoostingRegressor(n_estimators=50, random_state=0), diab, bench=True)
    regressor("diabetes_hgb", HistGradientBoostingRegressor(max_iter=30, random_state=0), diab, bench=True)
    regressor("diabnan_hgb", HistGradientBoostingRegressor(max_iter=30, random_state=0), diabnan)
    mlp = MLPRegressor(hidden_layer_sizes=(32,), max_iter=3000, learning_rate_init=0.01, random_state=0)
    regressor("diabetes_std_mlp", make_pipeline(StandardScaler(), mlp), diab, bench=True)
    regressor("diabetes_knn", KNeighborsRegressor(), diab, bench=True)
    regressor("diabetes_minmax_knn", make_pipeline(MinMaxScaler(), KNeighborsRegressor()), diab)
    regressor("diabnan_imputer_ridge", make_pipeline(SimpleImputer(), StandardScaler(), Ridge()), diabnan)
    regressor("diabetes_pca_linreg", make_pipeline(PCA(5, random_state=0), LinearRegression()), diab)
    regressor("diabetes_std_svr", make_pipeline(StandardScaler(), SVR(C=50.0)), diab)


def torch_style(d: dict) -> None:
    """Networks as torch.onnx.export writes them (Gemm/MatMul, Relu, Conv, MaxPool, Flatten,
    Softmax), built with onnx.helper so torch is not needed; random weights."""
    rng = np.random.default_rng(11)

    def w(*shape, scale=0.5):
        return (rng.normal(size=shape) * scale).astype(np.float32)

    def model(name, nodes, inp, outputs, inits):
        graph = helper.make_graph(
            nodes, name, [inp], outputs, initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()]
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.checker.check_model(m, full_check=True)
        return m

    iris = d["iris"]
    mlp = model(
        "torch_mlp",
        [
            helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["h1"], transB=1),
            helper.make_node("Relu", ["h1"], ["a1"]),
            helper.make_node("MatMul", ["a1", "fc2.weight_t"], ["h2m"]),
            helper.make_node("Add", ["h2m", "fc2.bias"], ["h2"]),
            helper.make_node("Tanh", ["h2"], ["a2"]),
            helper.make_node("Gemm", ["a2", "fc3.weight", "fc3.bias"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4]),
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3]),
        ],
        {
            "fc1.weight": w(32, 4),
            "fc1.bias": w(32),
            "fc2.weight_t": w(32, 16),
            "fc2.bias": w(16),
            "fc3.weight": w(3, 16),
            "fc3.bias": w(3),
        },
    )
    header, rows = expected_plain(mlp, run_ort(mlp, iris.test))
    save("torch_mlp", mlp, iris, header, rows, bench=True)

    digits = d["digits"]
    cnn = model(
        "torch_cnn",
        [
            helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["c1"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c2"], ["r2"]),
            helper.make_node("Flatten", ["r2"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8]),
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        {
            "conv1.weight": w(8, 1, 3, 3, scale=0.1),
            "conv1.bias": w(8, scale=0.1),
            "conv2.weight": w(16, 8, 3, 3, scale=0.1),
            "conv2.bias": w(16, scale=0.1),
            "fc.weight": w(10, 256, scale=0.1),
            "fc.bias": w(10, scale=0.1),
        },
    )
    header, rows = expected_plain(cnn, run_ort(cnn, digits.test))
    save("torch_cnn", cnn, digits, header, rows, bench=True)


def main() -> None:
    want = stamp()
    stamp_file = ZOO / "stamp"
    if stamp_file.exists() and stamp_file.read_text() == want and (ZOO / "manifest.tsv").exists():
        print(f"zoo {ZOO} is up to date ({len((ZOO / 'manifest.tsv').read_text().splitlines()) - 1} models)")
        return
    print(f"building the zoo in {ZOO} with {versions()}")
    if ZOO.exists():
        # Only ever delete a zoo (a directory this script made), never what AIEDGE_ZOO points to
        # by mistake.
        if any(ZOO.iterdir()) and not (ZOO / "stamp").exists() and not (ZOO / "manifest.tsv").exists():
            sys.exit(f"{ZOO} is not empty and is not a model zoo; set AIEDGE_ZOO to a new directory")
        shutil.rmtree(ZOO)
    ZOO.mkdir(parents=True)
    warnings.filterwarnings("ignore")
    d = datasets()
    for data in d.values():
        data.write()
    classifiers(d)
    regressors(d)
    torch_style(d)
    lines = [["name", "input", "twin", "bench", "ops"]] + MANIFEST
    (ZOO / "manifest.tsv").write_text("".join("\t".join(line) + "\n" for line in lines))
    stamp_file.write_text(want)
    print(f"zoo {ZOO}: {len(MANIFEST)} models")


if __name__ == "__main__":
    main()
