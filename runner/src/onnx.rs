//! ONNX models, run with [tract](https://github.com/sonos/tract) (pure Rust, no native runtime)
//! plus this runner's own ONNX-ML operators.
//!
//! - [`Model::load`] parses a model file, refuses what this runner cannot run with an error a user
//!   can act on ([`OnnxError`]; the first unsupported operator is named), and builds one optimised
//!   plan whose batch dimension is the symbol `N`, so every batch size reuses it.
//! - [`Model::predict_csv`] streams an input CSV (header, then one row of `features` numbers per
//!   example) through the plan in batches and writes the predictions CSV; its columns are
//!   [`ModelInfo::output_columns`].
//! - [`check_csv`] checks an input CSV without a model (the server, at upload), streaming.
//!
//! Supported: models with exactly one f32 input `[batch, d1, …]` whose non-batch dimensions are
//! known (a CSV row holds their product, in row-major order, so a `[N, 1, 4, 4]` image is 16
//! columns), and outputs that carry the batch dimension first. Operators are tract-onnx's (the
//! standard ONNX set: MLPs, CNNs, most of opset 9–18, a few `com.microsoft` contrib operators,
//! and the ONNX-ML `CategoryMapper`) plus this runner's, registered into tract's operator
//! register in place of tract's or where it has none:
//!
//! - `ml_ops`: the ONNX-ML operators scikit-learn exports use: `TreeEnsembleClassifier`,
//!   `TreeEnsembleRegressor`, `LinearClassifier`, `LinearRegressor`, `Normalizer`, `Scaler`,
//!   `Imputer`, `SVMClassifier`, `SVMRegressor`, `ArrayFeatureExtractor`, with onnxruntime's
//!   semantics (its outputs are the reference) and string class labels as string tensors;
//! - `rowwise`, `binary`, `dense`, `conv`: fast paths for what tract runs slowly on tabular
//!   batches (`Softmax`, `ArgMax`, `TopK`, `Relu`; `Add`/`Sub`/`Mul`/`Div` with a per-column
//!   row; small constant `MatMul`/`Gemm` layers; small 2-D `Conv`), each falling back to
//!   tract's own otherwise.
//!
//! A `ZipMap` at the end of a classifier (skl2onnx's default) is dropped (`graph`), so the
//! model gives the same columns as its `zipmap=False` twin. Not `OneHotEncoder` or other
//! string inputs. `runner/tests/zoo.rs` checks all of this against onnxruntime on a zoo of
//! scikit-learn and PyTorch-style models (`scripts/zoo.sh`); `scripts/onnx_bench.sh` compares
//! speeds.
//!
//! Output columns: `row` (0-based index of the input row), then per output (in the model's order)
//! one column named after it when it holds one value per row (`[N]` or `[N, 1]`), else
//! `<name>_<i>` for its flattened values. A classifier (a `*Classifier` operator or
//! label/probability outputs: one `[N]` output and one float `[N, C]` output) gets `label` and
//! `prob_<class>`, with the class labels taken from the model when it declares them (the
//! classifier operator, its `ZipMap`, or the constant an MLP's label is picked from).

mod binary;
mod conv;
mod dense;
mod graph;
mod layer;
mod ml_ops;
mod rowwise;

use std::fmt::Write as _;
use std::path::Path;

use tract_onnx::pb;
use tract_onnx::prelude::*;

/// One input or output tensor of a model, as this runner runs it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TensorInfo {
    pub name: String,
    /// `None` for a dynamic dimension (the batch).
    pub shape: Vec<Option<usize>>,
    /// `"f32"`, `"i64"`, `"string"`, …
    pub dtype: String,
}

/// What a loaded model takes and gives, for the pages and the predictions file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    /// Number of CSV columns (features) one row must have.
    pub features: usize,
    /// The CSV header the predictions file will have, e.g. `["row","label","prob_0","prob_1"]`
    /// or `["row","variable"]`.
    pub output_columns: Vec<String>,
}

/// Why a model or a CSV was refused, or why a run failed. The messages are written for the user.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The file is not a readable ONNX model (truncated, garbage, empty).
    #[error("not an ONNX model: {0}")]
    NotOnnx(String),
    /// An operator tract does not implement (the first one, in graph order).
    #[error("unsupported operator `{op}`{} (node `{node}`)", domain_suffix(.domain))]
    UnsupportedOperator { op: String, domain: String, node: String },
    #[error("the model has {0} inputs; only single-input models are supported")]
    InputCount(usize),
    #[error("the model's input `{name}` is {dtype}; only float (f32) tensors are supported")]
    InputType { name: String, dtype: String },
    /// The input's shape does not fit "batch first, then known dimensions".
    #[error("the model's input `{name}` {reason}")]
    InputShape { name: String, reason: String },
    /// An output this runner cannot turn into CSV columns.
    #[error("the model's output `{name}` {reason}")]
    Output { name: String, reason: String },
    #[error("the model keeps tensor `{0}` in an external data file; only self-contained .onnx files are supported")]
    ExternalData(String),
    /// tract could not analyse or optimise the model (inconsistent shapes, unsupported attribute).
    #[error("the model cannot be prepared: {0}")]
    Invalid(String),
    #[error("the input CSV is empty; it needs a header row, then one row per example")]
    EmptyCsv,
    #[error("the input CSV has no rows (only a header)")]
    NoRows,
    #[error("the input CSV header has {found} columns but the model takes {expected} features")]
    HeaderColumns { found: usize, expected: usize },
    #[error("line {line}: expected {expected} columns, found {found}")]
    RowColumns { line: u64, expected: usize, found: usize },
    #[error("line {line}, column {column}: {}", not_a_number(.value))]
    NotANumber { line: u64, column: usize, value: String },
    /// Reading the input or writing the predictions failed (disk, network, closed pipe).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// tract failed while running a batch of a model it had accepted.
    #[error("inference failed: {0}")]
    Run(String),
}

impl OnnxError {
    /// True when the problem is the user's model or data (retrying on another node would fail the
    /// same way); false for I/O and for failures while running a model that was accepted.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, OnnxError::Io(_) | OnnxError::Run(_))
    }
}

fn domain_suffix(domain: &str) -> String {
    if is_standard_domain(domain) {
        String::new()
    } else {
        format!(" from domain `{domain}`")
    }
}

fn not_a_number(value: &str) -> String {
    if value.is_empty() {
        return "the cell is empty; expected a number".to_string();
    }
    let mut shown: String = value.chars().take(40).collect();
    if shown.len() < value.len() {
        shown.push('…');
    }
    format!("`{shown}` is not a number")
}

/// Domains whose operators tract-onnx registers (by op type alone).
fn is_standard_domain(domain: &str) -> bool {
    matches!(domain, "" | "ai.onnx" | "ai.onnx.ml" | "com.microsoft")
}

/// A loaded, checked and optimised model. Cheap to share (`Send + Sync`); each
/// [`predict_csv`](Model::predict_csv) call runs its own state.
pub struct Model {
    plan: Arc<TypedSimplePlan>,
    info: ModelInfo,
    /// The input's non-batch dimensions; a CSV row is their product of values.
    input_dims: Vec<usize>,
    /// Model output indices in the order their columns appear.
    column_order: Vec<usize>,
    /// Values per row of each model output (by model output index).
    widths: Vec<usize>,
}

impl std::fmt::Debug for Model {
    /// The plan's own `Debug` is the whole graph; the description is what identifies a model.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Model {
    /// Loads and checks a model file: parses it, refuses unsupported operators naming the first
    /// one, requires exactly one float input whose non-batch dimensions are known, and optimises
    /// it into a runnable plan with a dynamic batch dimension.
    pub fn load(path: &Path) -> Result<Model, OnnxError> {
        let bytes = std::fs::read(path).map_err(|e| std::io::Error::new(e.kind(), format!("reading the model {}: {e}", path.display())))?;
        Model::from_bytes(&bytes)
    }

    /// [`Model::load`] for a model already in memory (an upload).
    ///
    /// A file of the wrong shape can make tract panic instead of returning an error (found by
    /// `tests/hostile_input.rs`: a changed byte in a valid model, "no entry found for key" in
    /// tract-onnx 0.23). Such a panic is caught here and answered as an invalid model, so an
    /// upload or a job gets an error and nothing else stops. IMPORTANT: this needs unwinding; a
    /// build with `panic = "abort"` would lose the server's or agent's process instead.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model, OnnxError> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Model::read(bytes))) {
            Ok(result) => result,
            Err(panic) => {
                let why = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
                Err(OnnxError::Invalid(format!("tract stopped reading it ({})", why.as_deref().unwrap_or("no reason given"))))
            }
        }
    }

    fn read(bytes: &[u8]) -> Result<Model, OnnxError> {
        if bytes.is_empty() {
            return Err(OnnxError::NotOnnx("the file is empty".into()));
        }
        let mut onnx = tract_onnx::onnx().with_ignore_value_info(true);
        ml_ops::register(&mut onnx.op_register);
        rowwise::register(&mut onnx.op_register);
        binary::register(&mut onnx.op_register);
        dense::register(&mut onnx.op_register);
        conv::register(&mut onnx.op_register);
        let mut proto = onnx.proto_model_for_read(&mut &bytes[..]).map_err(|e| OnnxError::NotOnnx(format!("{e:#}")))?;
        let graph = proto.graph.as_mut().ok_or_else(|| OnnxError::NotOnnx("the file holds no graph".into()))?;
        if graph.output.is_empty() {
            return Err(OnnxError::NotOnnx("the graph has no outputs".into()));
        }
        // Read before the ZipMap goes: it declares the class labels.
        let classes = Classes::of(graph);
        graph::drop_zipmaps(graph);
        check_graph(graph, &onnx.op_register)?;
        let (input_name, input_dims) = check_input(graph)?;
        let features = input_dims.iter().product();
        let names: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();

        let mut model = onnx.model_for_proto_model(&proto).map_err(|e| OnnxError::Invalid(format!("{e:#}")))?;
        // IMPORTANT: whatever the file declares for the batch (a name, nothing, or a fixed 1),
        // it becomes the symbol N, so one optimised plan serves every batch size.
        let batch = model.sym("N");
        let mut shape: TVec<TDim> = tvec![batch.clone().into()];
        shape.extend(input_dims.iter().map(|d| d.to_dim()));
        model.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape)).map_err(|e| OnnxError::Invalid(format!("{e:#}")))?;
        let typed = model
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .and_then(integer_outputs_as_i64)
            .map_err(|e| OnnxError::Invalid(format!("{e:#}")))?;

        let batch_dim = TDim::from(batch);
        let mut outputs = Vec::with_capacity(names.len());
        let mut widths = Vec::with_capacity(names.len());
        for (ix, name) in names.iter().enumerate() {
            let fact = typed.output_fact(ix).map_err(|e| OnnxError::Invalid(format!("{e:#}")))?;
            let (info, width) = describe_output(name, fact, &batch_dim)?;
            outputs.push(info);
            widths.push(width);
        }
        let (column_order, output_columns) = output_columns(&classes, &outputs, &widths);

        let optimized = typed.into_optimized().map_err(|e| OnnxError::Invalid(format!("{e:#}")))?;
        let plan = TypedSimplePlan::new(optimized).map_err(|e| OnnxError::Invalid(format!("{e:#}")))?;
        let mut input_shape = vec![None];
        input_shape.extend(input_dims.iter().map(|d| Some(*d)));
        let info = ModelInfo {
            inputs: vec![TensorInfo { name: input_name, shape: input_shape, dtype: "f32".into() }],
            outputs,
            features,
            output_columns,
        };
        tracing::debug!(features, columns = info.output_columns.len(), "onnx model loaded");
        Ok(Model { plan, info, input_dims, column_order, widths })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Reads a CSV (header row + one row per example, `features` numeric columns), runs it in
    /// batches of `batch_rows` rows, writes the predictions CSV (header =
    /// `info().output_columns`; first column `row` = 0-based row index) and calls
    /// `progress(rows_done)` after each batch. Returns the number of rows written.
    ///
    /// `batch_rows` is rounded up to a multiple of [`BATCH_ROW_MULTIPLE`] so the predictions do
    /// not depend on it. On error the output may hold a partial file; the caller discards it.
    pub fn predict_csv<R: std::io::Read, W: std::io::Write>(
        &self,
        input: R,
        output: W,
        batch_rows: usize,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, OnnxError> {
        let batch_rows = batch_rows.max(1).checked_next_multiple_of(BATCH_ROW_MULTIPLE).unwrap_or(usize::MAX - BATCH_ROW_MULTIPLE + 1);
        let features = self.info.features;
        let mut rows = CsvRows::open(input, Some(features))?;
        let mut out = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(output);
        let mut batch = Vec::with_capacity(batch_rows.saturating_mul(features).min(1 << 24));
        let mut cell = String::new();
        let mut done: u64 = 0;
        loop {
            batch.clear();
            let mut n = 0;
            while n < batch_rows && rows.next_row(&mut batch)? {
                n += 1;
            }
            if n == 0 {
                break;
            }
            if done == 0 {
                out.write_record(&self.info.output_columns).map_err(csv_error)?;
            }
            for (first, values) in (0..n).step_by(PLAN_ROWS).zip(batch.chunks(PLAN_ROWS * features.max(1))) {
                let m = values.len() / features.max(1);
                let results = self.run_batch(values, m)?;
                let cells = results.iter().zip(&self.widths).map(|(t, w)| Cells::of(t, m, *w)).collect::<Result<Vec<_>, _>>()?;
                for r in 0..m {
                    cell.clear();
                    let _ = write!(cell, "{}", done + (first + r) as u64);
                    out.write_field(&cell).map_err(csv_error)?;
                    for &o in &self.column_order {
                        let w = self.widths[o];
                        for k in r * w..(r + 1) * w {
                            cell.clear();
                            cells[o].format(k, &mut cell);
                            out.write_field(&cell).map_err(csv_error)?;
                        }
                    }
                    out.write_record(None::<&[u8]>).map_err(csv_error)?;
                }
            }
            done += n as u64;
            progress(done);
        }
        if done == 0 {
            return Err(OnnxError::NoRows);
        }
        out.flush()?;
        Ok(done)
    }

    /// Runs `rows` rows already in memory (`features` values each, row-major) as one batch and
    /// returns how many output values they gave, discarding them: what
    /// `runner/examples/onnx_bench.rs` times to compare inference alone with onnxruntime's
    /// (without CSV parsing and formatting, which onnxruntime's numbers do not include either).
    #[doc(hidden)]
    pub fn run_in_memory(&self, values: &[f32], rows: usize) -> Result<usize, OnnxError> {
        if values.len() != rows.saturating_mul(self.info.features) {
            return Err(OnnxError::Run(format!("{} values for {rows} rows of {} features", values.len(), self.info.features)));
        }
        let features = self.info.features.max(1);
        let mut produced = 0;
        for chunk in values.chunks(PLAN_ROWS * features) {
            produced += self.run_batch(chunk, chunk.len() / features)?.iter().map(|t| t.len()).sum::<usize>();
        }
        Ok(produced)
    }

    fn run_batch(&self, values: &[f32], rows: usize) -> Result<TVec<TValue>, OnnxError> {
        let mut shape = Vec::with_capacity(self.input_dims.len() + 1);
        shape.push(rows);
        shape.extend_from_slice(&self.input_dims);
        let tensor = Tensor::from_shape(&shape, values).map_err(|e| OnnxError::Run(format!("{e:#}")))?;
        self.plan.run(tvec![tensor.into_tvalue()]).map_err(|e| OnnxError::Run(format!("{e:#}")))
    }
}

/// The plan runs on at most this many rows at a time (a multiple of [`BATCH_ROW_MULTIPLE`]);
/// bigger batches go through in pieces. Why: every run allocates its intermediate tensors, and
/// once a run's allocations pass glibc's trim threshold (128 KiB) the heap is handed back to
/// the kernel at the end of each run and faulted in again by the next: page faults took 15-30 %
/// of the profile of a PCA pipeline on 20 000-row batches, and with 1024-row pieces a 32-wide
/// MLP still ran at half the speed it has with 256 (`scripts/onnx_bench.sh`). 256 rows also keep
/// a run's tensors in L1/L2, and a run's fixed cost (about a microsecond) stays small per row.
const PLAN_ROWS: usize = 256;

/// Batches run a multiple of this many rows. IMPORTANT: tract's SIMD kernels handle a row's
/// values differently depending on their offset from the tensor's (vector-aligned) start (seen
/// with Softmax over 3 classes: the last bit of a probability changed with the row's place in the
/// batch). Starting every batch at a multiple of 64 rows puts each row at the same alignment
/// whatever the batch size, so the predictions are identical for any `batch_rows`.
pub const BATCH_ROW_MULTIPLE: usize = 64;

/// Checks an input CSV without a model (server side, at upload/submit): a header and at least
/// one row, every row as many columns as the header (and as `expected_columns` when given), every
/// cell an f32. Returns `(columns, rows)`. Streams; never holds more than one row.
pub fn check_csv<R: std::io::Read>(input: R, expected_columns: Option<usize>) -> Result<(usize, u64), OnnxError> {
    let mut rows = CsvRows::open(input, expected_columns)?;
    let mut row = Vec::with_capacity(rows.columns);
    let mut count = 0u64;
    while rows.next_row(&mut row)? {
        row.clear();
        count += 1;
    }
    if count == 0 {
        return Err(OnnxError::NoRows);
    }
    Ok((rows.columns, count))
}

/// The rows of an input CSV after its header, parsed as f32 and checked.
struct CsvRows<R> {
    reader: csv::Reader<R>,
    record: csv::ByteRecord,
    columns: usize,
}

impl<R: std::io::Read> CsvRows<R> {
    fn open(input: R, expected_columns: Option<usize>) -> Result<Self, OnnxError> {
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(input);
        let mut record = csv::ByteRecord::new();
        if !reader.read_byte_record(&mut record).map_err(csv_error)? {
            return Err(OnnxError::EmptyCsv);
        }
        let columns = record.len();
        if let Some(expected) = expected_columns {
            if columns != expected {
                return Err(OnnxError::HeaderColumns { found: columns, expected });
            }
        }
        Ok(CsvRows { reader, record, columns })
    }

    /// Appends the next row's values to `out`; false at the end of the input.
    fn next_row(&mut self, out: &mut Vec<f32>) -> Result<bool, OnnxError> {
        if !self.reader.read_byte_record(&mut self.record).map_err(csv_error)? {
            return Ok(false);
        }
        let line = self.record.position().map_or(0, |p| p.line());
        if self.record.len() != self.columns {
            return Err(OnnxError::RowColumns { line, expected: self.columns, found: self.record.len() });
        }
        for (ix, cell) in self.record.iter().enumerate() {
            match std::str::from_utf8(cell).ok().and_then(|s| s.parse::<f32>().ok()) {
                Some(v) => out.push(v),
                None => {
                    return Err(OnnxError::NotANumber { line, column: ix + 1, value: String::from_utf8_lossy(cell).into_owned() });
                }
            }
        }
        Ok(true)
    }
}

fn csv_error(e: csv::Error) -> OnnxError {
    let line = e.position().map(|p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(e) => OnnxError::Io(e),
        // Unreachable with byte records and `flexible`; kept as a plain I/O-style failure.
        other => OnnxError::Io(std::io::Error::other(format!(
            "CSV error{}: {other:?}",
            line.map(|l| format!(" at line {l}")).unwrap_or_default()
        ))),
    }
}

/// Refuses the first operator tract does not implement (walking subgraphs too) and tensors
/// kept in external files (which would make tract read paths named by the model).
fn check_graph(graph: &pb::GraphProto, ops: &tract_onnx::model::OnnxOpRegister) -> Result<(), OnnxError> {
    for t in &graph.initializer {
        check_tensor(t)?;
    }
    for node in &graph.node {
        if !is_standard_domain(&node.domain) || !ops.0.contains_key(&node.op_type) {
            let name = if node.name.is_empty() { node.output.first().cloned().unwrap_or_default() } else { node.name.clone() };
            return Err(OnnxError::UnsupportedOperator { op: node.op_type.clone(), domain: node.domain.clone(), node: name });
        }
        for attr in &node.attribute {
            for t in attr.t.iter().chain(&attr.tensors) {
                check_tensor(t)?;
            }
            for g in attr.g.iter().chain(&attr.graphs) {
                check_graph(g, ops)?;
            }
        }
    }
    Ok(())
}

fn check_tensor(t: &pb::TensorProto) -> Result<(), OnnxError> {
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) || !t.external_data.is_empty() {
        return Err(OnnxError::ExternalData(t.name.clone()));
    }
    Ok(())
}

/// The single real input (initializers listed as inputs by old exporters do not count): its name
/// and non-batch dimensions.
fn check_input(graph: &pb::GraphProto) -> Result<(String, Vec<usize>), OnnxError> {
    let inits: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph.input.iter().filter(|i| !inits.contains(i.name.as_str())).collect();
    let [input] = inputs.as_slice() else {
        return Err(OnnxError::InputCount(inputs.len()));
    };
    let name = input.name.clone();
    let shape_error = |reason: String| OnnxError::InputShape { name: name.clone(), reason };
    let Some(pb::type_proto::Value::TensorType(tensor)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(shape_error("is not a tensor (or declares no type)".into()));
    };
    if tensor.elem_type != pb::tensor_proto::DataType::Float as i32 {
        return Err(OnnxError::InputType { name, dtype: onnx_dtype_name(tensor.elem_type) });
    }
    let Some(shape) = tensor.shape.as_ref() else {
        return Err(shape_error("declares no shape; it needs [batch, features] with the features known".into()));
    };
    if shape.dim.len() < 2 {
        return Err(shape_error(format!(
            "has {} dimension(s); it needs a batch dimension first, then the features (e.g. [N, 4])",
            shape.dim.len()
        )));
    }
    let mut dims = Vec::with_capacity(shape.dim.len() - 1);
    for (ix, dim) in shape.dim.iter().enumerate().skip(1) {
        use pb::tensor_shape_proto::dimension::Value;
        match &dim.value {
            Some(Value::DimValue(v)) if *v > 0 => dims.push(*v as usize),
            other => {
                let shown = match other {
                    Some(Value::DimParam(p)) => format!("`{p}`"),
                    Some(Value::DimValue(v)) => v.to_string(),
                    None => "unknown".into(),
                };
                return Err(shape_error(format!("has dimension {ix} {shown}; every dimension but the first (batch) must be a known size")));
            }
        }
    }
    Ok((name, dims))
}

/// tract's decluttering turns int64 values that look like sizes (a classifier's label after a
/// `Cast` or `Reshape`) into its symbolic `TDim`; such outputs get a cast back to i64.
fn integer_outputs_as_i64(mut typed: TypedModel) -> TractResult<TypedModel> {
    use tract_onnx::tract_hir::tract_core::ops::cast::cast;
    for ix in 0..typed.outputs.len() {
        let outlet = typed.outputs[ix];
        if typed.outlet_fact(outlet)?.datum_type == TDim::datum_type() {
            let name = format!("{}.as_i64", typed.node(outlet.node).name);
            let label = typed.outlet_label(outlet).map(str::to_string);
            let casted = typed.wire_node(name, cast(i64::datum_type()), &[outlet])?[0];
            typed.outputs[ix] = casted;
            if let Some(label) = label {
                typed.set_outlet_label(casted, label)?;
            }
        }
    }
    Ok(typed)
}

/// Shape and dtype of one output, and how many values per row it gives.
fn describe_output(name: &str, fact: &TypedFact, batch: &TDim) -> Result<(TensorInfo, usize), OnnxError> {
    let error = |reason: String| OnnxError::Output { name: name.to_string(), reason };
    let dtype =
        datum_name(fact.datum_type).ok_or_else(|| error(format!("is of type {:?}, which cannot be written to CSV", fact.datum_type)))?;
    let dims = fact.shape.dims();
    if dims.first() != Some(batch) {
        return Err(error(format!("has shape {:?}; it needs the batch dimension first (one result per input row)", fact.shape)));
    }
    let mut shape = vec![None];
    let mut width = 1usize;
    for d in &dims[1..] {
        let d = d
            .as_i64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| error(format!("has shape {:?}; only its first (batch) dimension may vary", fact.shape)))?;
        shape.push(Some(d));
        width = width.saturating_mul(d);
    }
    Ok((TensorInfo { name: name.to_string(), shape, dtype: dtype.to_string() }, width))
}

/// What the graph says about classification, read before [`graph::drop_zipmaps`] rewrites it.
struct Classes {
    /// The graph has a `*Classifier` operator.
    classifier: bool,
    /// The class labels a classifier (or ZipMap) declares, in score order.
    labels: Option<Vec<String>>,
}

impl Classes {
    fn of(graph: &pb::GraphProto) -> Classes {
        let classifier = graph.node.iter().any(|n| n.op_type.ends_with("Classifier"));
        let labels = graph
            .node
            .iter()
            .filter(|n| n.op_type.ends_with("Classifier") || n.op_type == "ZipMap")
            .find_map(|n| {
                n.attribute.iter().find_map(|a| match a.name.as_str() {
                    "classlabels_ints" | "classlabels_int64s" if !a.ints.is_empty() => Some(a.ints.iter().map(|i| i.to_string()).collect()),
                    "classlabels_strings" if !a.strings.is_empty() => {
                        Some(a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
                    }
                    _ => None,
                })
            })
            .or_else(|| graph.output.iter().find_map(|o| graph::extracted_class_labels(graph, &o.name)));
        Classes { classifier, labels }
    }
}

/// The predictions header and the order of the outputs' columns.
fn output_columns(classes: &Classes, outputs: &[TensorInfo], widths: &[usize]) -> (Vec<usize>, Vec<String>) {
    let mut columns = vec!["row".to_string()];
    if let Some((label, prob)) = classifier_outputs(classes, outputs) {
        columns.push("label".into());
        match classes.labels.as_ref().filter(|c| c.len() == widths[prob]) {
            Some(names) => columns.extend(names.iter().map(|c| format!("prob_{c}"))),
            None => columns.extend((0..widths[prob]).map(|i| format!("prob_{i}"))),
        }
        return (vec![label, prob], columns);
    }
    for (o, w) in outputs.iter().zip(widths) {
        if o.shape.len() == 1 || *w == 1 {
            columns.push(o.name.clone());
        } else {
            columns.extend((0..*w).map(|i| format!("{}_{i}", o.name)));
        }
    }
    ((0..outputs.len()).collect(), columns)
}

/// `(label output, probabilities output)` when the model is a classifier: one `[N]` output and
/// one float `[N, C]` output, from a `*Classifier` operator or named like labels/probabilities.
fn classifier_outputs(classes: &Classes, outputs: &[TensorInfo]) -> Option<(usize, usize)> {
    if outputs.len() != 2 {
        return None;
    }
    let is_label = |o: &TensorInfo| o.shape.len() == 1;
    let is_prob = |o: &TensorInfo| o.shape.len() == 2 && o.dtype.starts_with('f');
    let (label, prob) = if is_label(&outputs[0]) && is_prob(&outputs[1]) {
        (0, 1)
    } else if is_label(&outputs[1]) && is_prob(&outputs[0]) {
        (1, 0)
    } else {
        return None;
    };
    let named = outputs[label].name.to_lowercase().contains("label") && outputs[prob].name.to_lowercase().contains("prob");
    (classes.classifier || named).then_some((label, prob))
}

fn onnx_dtype_name(elem_type: i32) -> String {
    use pb::tensor_proto::DataType as D;
    let name = match D::try_from(elem_type) {
        Ok(D::Float) => "f32",
        Ok(D::Uint8) => "u8",
        Ok(D::Int8) => "i8",
        Ok(D::Uint16) => "u16",
        Ok(D::Int16) => "i16",
        Ok(D::Int32) => "i32",
        Ok(D::Int64) => "i64",
        Ok(D::String) => "string",
        Ok(D::Bool) => "bool",
        Ok(D::Float16) => "f16",
        Ok(D::Double) => "f64",
        Ok(D::Uint32) => "u32",
        Ok(D::Uint64) => "u64",
        Ok(D::Bfloat16) => "bf16",
        Ok(other) => return format!("{other:?}").to_lowercase(),
        Err(_) => return format!("an unknown type ({elem_type})"),
    };
    name.to_string()
}

fn datum_name(dt: DatumType) -> Option<&'static str> {
    Some(match dt {
        DatumType::F32 => "f32",
        DatumType::F64 => "f64",
        DatumType::F16 => "f16",
        DatumType::I8 => "i8",
        DatumType::I16 => "i16",
        DatumType::I32 => "i32",
        DatumType::I64 => "i64",
        DatumType::U8 => "u8",
        DatumType::U16 => "u16",
        DatumType::U32 => "u32",
        DatumType::U64 => "u64",
        DatumType::Bool => "bool",
        DatumType::String => "string",
        _ => return None,
    })
}

/// One output tensor's values, flattened row-major, ready to format.
enum Cells<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    F16(&'a [f16]),
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
    Bool(&'a [bool]),
    Str(&'a [String]),
}

impl<'a> Cells<'a> {
    fn of(t: &'a Tensor, rows: usize, width: usize) -> Result<Cells<'a>, OnnxError> {
        let run = |e: TractError| OnnxError::Run(format!("{e:#}"));
        if t.shape().first() != Some(&rows) || t.len() != rows * width {
            return Err(OnnxError::Run(format!(
                "an output has shape {:?} for a batch of {rows} rows (expected {width} values per row)",
                t.shape()
            )));
        }
        let t = t.try_as_plain_ram().map_err(run)?;
        Ok(match t.datum_type() {
            DatumType::F32 => Cells::F32(t.as_slice().map_err(run)?),
            DatumType::F64 => Cells::F64(t.as_slice().map_err(run)?),
            DatumType::F16 => Cells::F16(t.as_slice().map_err(run)?),
            DatumType::I8 => Cells::I8(t.as_slice().map_err(run)?),
            DatumType::I16 => Cells::I16(t.as_slice().map_err(run)?),
            DatumType::I32 => Cells::I32(t.as_slice().map_err(run)?),
            DatumType::I64 => Cells::I64(t.as_slice().map_err(run)?),
            DatumType::U8 => Cells::U8(t.as_slice().map_err(run)?),
            DatumType::U16 => Cells::U16(t.as_slice().map_err(run)?),
            DatumType::U32 => Cells::U32(t.as_slice().map_err(run)?),
            DatumType::U64 => Cells::U64(t.as_slice().map_err(run)?),
            DatumType::Bool => Cells::Bool(t.as_slice().map_err(run)?),
            DatumType::String => Cells::Str(t.as_slice().map_err(run)?),
            other => return Err(OnnxError::Run(format!("an output is of type {other:?}"))),
        })
    }

    /// Appends value `ix`; `{}` on floats is the shortest text that parses back to the same
    /// value.
    fn format(&self, ix: usize, out: &mut String) {
        let _ = match self {
            Cells::F32(v) => write!(out, "{}", v[ix]),
            Cells::F64(v) => write!(out, "{}", v[ix]),
            Cells::F16(v) => write!(out, "{}", v[ix]),
            Cells::I8(v) => write!(out, "{}", v[ix]),
            Cells::I16(v) => write!(out, "{}", v[ix]),
            Cells::I32(v) => write!(out, "{}", v[ix]),
            Cells::I64(v) => write!(out, "{}", v[ix]),
            Cells::U8(v) => write!(out, "{}", v[ix]),
            Cells::U16(v) => write!(out, "{}", v[ix]),
            Cells::U32(v) => write!(out, "{}", v[ix]),
            Cells::U64(v) => write!(out, "{}", v[ix]),
            Cells::Bool(v) => write!(out, "{}", v[ix]),
            Cells::Str(v) => write!(out, "{}", v[ix]),
        };
    }
}
