//! Tree ensembles (`TreeEnsembleClassifier`, `TreeEnsembleRegressor`): a flattened, batched
//! evaluator with onnxruntime's semantics.
//!
//! Why not tract-onnx-opl's: it interprets every node through generic tensors and was 700 to
//! 2 500 times slower than onnxruntime, and it refuses regressors, string labels and binary
//! classifiers with two base values.
//!
//! Layout: all trees' nodes in one `Vec<Node>` of 16-byte nodes, each tree in depth-first order
//! with the *false* child right after its parent, so a walk only loads one extra index (the true
//! child) and mostly moves forward in memory. Rows are evaluated in blocks of `BLOCK_ROWS`: for
//! each block, each tree in turn over all the block's rows, so a tree's nodes stay in cache while
//! many rows go down it (what onnxruntime does too, and the order of its float additions).
//! The comparison is a type parameter, so the common case (every node `BRANCH_LEQ`, no missing
//! value tracks) is a tight loop with no mode dispatch.
//!
//! Semantics follow onnxruntime 1.x (`tree_ensemble_aggregator.h`, `ml_common.h`), whose outputs
//! are the reference: its single-target path, its binary-classifier conventions (one or two base
//! values, "binary case" when the leaves only vote for one class, the `add_second_class` rules)
//! and its logistic/softmax formulas.

use std::fmt;

/// Rows per block: big enough that a tree's nodes are reused many times while in cache, small
/// enough that the block's scores stay in L1 (onnxruntime uses 128 too).
const BLOCK_ROWS: usize = 128;

/// Marks a leaf in [`Node::feature`].
const LEAF: u32 = u32::MAX;
/// In an internal node's `b`: the low byte is its [`Mode`], this bit "missing goes true".
const MISSING_TRUE: u32 = 0x100;

/// How a node compares its feature with its threshold (`x <op> threshold` goes to the true child).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
}

impl Mode {
    /// Parses an ONNX `nodes_modes` entry; `Ok(None)` is a leaf.
    pub fn parse(s: &str) -> Result<Option<Mode>, String> {
        Ok(Some(match s {
            "BRANCH_LEQ" => Mode::Leq,
            "BRANCH_LT" => Mode::Lt,
            "BRANCH_GTE" => Mode::Gte,
            "BRANCH_GT" => Mode::Gt,
            "BRANCH_EQ" => Mode::Eq,
            "BRANCH_NEQ" => Mode::Neq,
            "LEAF" => return Ok(None),
            other => return Err(format!("unknown node mode `{other}`")),
        }))
    }

    fn code(self) -> u32 {
        self as u32
    }
}

/// How the trees' votes combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregate {
    #[default]
    Sum,
    Average,
    Min,
    Max,
}

impl Aggregate {
    pub fn parse(s: &str) -> Result<Aggregate, String> {
        Ok(match s {
            "SUM" => Aggregate::Sum,
            "AVERAGE" => Aggregate::Average,
            "MIN" => Aggregate::Min,
            "MAX" => Aggregate::Max,
            other => return Err(format!("unknown aggregate function `{other}`")),
        })
    }
}

/// What is applied to the aggregated scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PostTransform {
    #[default]
    None,
    Softmax,
    Logistic,
    SoftmaxZero,
}

impl PostTransform {
    /// `PROBIT` (an inverse error function no exporter in the zoo emits) is refused by name.
    pub fn parse(s: &str) -> Result<PostTransform, String> {
        Ok(match s {
            "NONE" => PostTransform::None,
            "SOFTMAX" => PostTransform::Softmax,
            "LOGISTIC" => PostTransform::Logistic,
            "SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
            other => return Err(format!("post_transform `{other}` is not supported")),
        })
    }
}

/// An ensemble as its ONNX attributes describe it (the `class_*` attributes of a classifier are
/// the `target_*` here).
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub nodes_treeids: Vec<i64>,
    pub nodes_nodeids: Vec<i64>,
    pub nodes_featureids: Vec<i64>,
    pub nodes_values: Vec<f32>,
    pub nodes_modes: Vec<String>,
    pub nodes_truenodeids: Vec<i64>,
    pub nodes_falsenodeids: Vec<i64>,
    /// Empty, or one per node (non-zero: a NaN feature goes to the true child).
    pub nodes_missing_value_tracks_true: Vec<i64>,
    pub target_treeids: Vec<i64>,
    pub target_nodeids: Vec<i64>,
    pub target_ids: Vec<i64>,
    pub target_weights: Vec<f32>,
    pub base_values: Vec<f32>,
    /// Targets (regressor) or classes (classifier).
    pub n_targets: usize,
    pub aggregate: Aggregate,
    pub post_transform: PostTransform,
}

/// One node, 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Node {
    /// Feature index, or [`LEAF`].
    feature: u32,
    /// Threshold; for a leaf its first weight (what the single-target path adds).
    value: f32,
    /// True child's index; for a leaf its first entry in [`TreeEnsemble::weights`].
    a: u32,
    /// Mode code and [`MISSING_TRUE`]; for a leaf its number of weights.
    b: u32,
}

/// A checked, flattened ensemble, ready to evaluate.
#[derive(Clone, PartialEq)]
pub struct TreeEnsemble {
    nodes: Vec<Node>,
    roots: Vec<u32>,
    /// `(target, weight)` of every leaf, each leaf's in a run.
    weights: Vec<(u32, f32)>,
    n_targets: usize,
    /// Largest feature index used, plus one: rows must have at least this many values.
    n_features: usize,
    /// The mode of every internal node when they all share one (the fast path).
    same_mode: Option<Mode>,
    has_missing_tracks: bool,
    aggregate: Aggregate,
    post_transform: PostTransform,
    base_values: Vec<f32>,
    /// Classifier: the leaves vote for one class only, with two classes.
    binary_case: bool,
    weights_all_positive: bool,
}

impl fmt::Debug for TreeEnsemble {
    /// The node arrays are the whole model; a summary is what a graph dump needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TreeEnsemble")
            .field("trees", &self.roots.len())
            .field("nodes", &self.nodes.len())
            .field("targets", &self.n_targets)
            .field("aggregate", &self.aggregate)
            .field("post_transform", &self.post_transform)
            .finish_non_exhaustive()
    }
}

impl TreeEnsemble {
    /// Checks the attributes (lengths, ids, links, no cycles) and flattens the trees.
    pub fn new(a: &Attributes) -> Result<TreeEnsemble, String> {
        let n = a.nodes_nodeids.len();
        if n == 0 {
            return Err("the ensemble has no nodes".into());
        }
        if n >= (u32::MAX / 2) as usize {
            return Err("the ensemble has too many nodes".into());
        }
        for (name, len) in [
            ("nodes_treeids", a.nodes_treeids.len()),
            ("nodes_featureids", a.nodes_featureids.len()),
            ("nodes_values", a.nodes_values.len()),
            ("nodes_modes", a.nodes_modes.len()),
            ("nodes_truenodeids", a.nodes_truenodeids.len()),
            ("nodes_falsenodeids", a.nodes_falsenodeids.len()),
        ] {
            if len != n {
                return Err(format!("`{name}` has {len} values for {n} nodes"));
            }
        }
        let missing = &a.nodes_missing_value_tracks_true;
        if !missing.is_empty() && missing.len() != n {
            return Err(format!("`nodes_missing_value_tracks_true` has {} values for {n} nodes", missing.len()));
        }
        let w = a.target_ids.len();
        if a.target_nodeids.len() != w || a.target_treeids.len() != w || a.target_weights.len() != w {
            return Err("the leaf weight attributes differ in length".into());
        }
        if a.n_targets == 0 {
            return Err("the ensemble has no targets or classes".into());
        }

        let mut modes = Vec::with_capacity(n);
        let mut same_mode: Option<Option<Mode>> = None;
        for s in &a.nodes_modes {
            let mode = Mode::parse(s)?;
            if let Some(m) = mode {
                same_mode = match same_mode {
                    None => Some(Some(m)),
                    Some(Some(prev)) if prev == m => Some(Some(m)),
                    _ => Some(None),
                };
            }
            modes.push(mode);
        }
        let same_mode = same_mode.unwrap_or(Some(Mode::Leq));

        // (tree, node) -> position in the attributes.
        let mut index = std::collections::HashMap::with_capacity(n);
        let mut roots_orig = Vec::new();
        let mut seen_trees = std::collections::HashSet::new();
        for i in 0..n {
            let key = (a.nodes_treeids[i], a.nodes_nodeids[i]);
            if index.insert(key, i).is_some() {
                return Err(format!("node {} of tree {} appears twice", key.1, key.0));
            }
            // onnxruntime's roots: the first node listed for each tree, trees in that order.
            if i == 0 || a.nodes_treeids[i] != a.nodes_treeids[i - 1] {
                if !seen_trees.insert(key.0) {
                    return Err(format!("the nodes of tree {} are not contiguous", key.0));
                }
                roots_orig.push(i);
            }
        }
        let child = |i: usize, id: i64, which: &str| -> Result<usize, String> {
            let key = (a.nodes_treeids[i], id);
            match index.get(&key) {
                Some(&c) if c != i => Ok(c),
                Some(_) => Err(format!("node {} of tree {} is its own child", key.1, key.0)),
                None => Err(format!("node {} of tree {} has a {which} child {id} that does not exist", a.nodes_nodeids[i], key.0)),
            }
        };

        // Leaf weights, sorted by (tree, node) then listing order, as onnxruntime reads them.
        let mut order: Vec<usize> = (0..w).collect();
        order.sort_by_key(|&k| (a.target_treeids[k], a.target_nodeids[k], k));
        let mut leaf_weights: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n];
        let mut weights_all_positive = true;
        let mut voted = std::collections::BTreeSet::new();
        for k in order {
            let key = (a.target_treeids[k], a.target_nodeids[k]);
            let Some(&node) = index.get(&key) else {
                return Err(format!("a weight names node {} of tree {}, which does not exist", key.1, key.0));
            };
            let target = a.target_ids[k];
            if target < 0 || target as usize >= a.n_targets {
                return Err(format!("a weight is for target {target}, but there are {} targets", a.n_targets));
            }
            if a.target_weights[k] < 0.0 {
                weights_all_positive = false;
            }
            voted.insert(target);
            // Weights on internal nodes (old onnxmltools) are ignored, as onnxruntime does.
            if modes[node].is_none() {
                leaf_weights[node].push((target as u32, a.target_weights[k]));
            }
        }

        let mut nodes: Vec<Node> = Vec::with_capacity(n);
        let mut weights = Vec::with_capacity(w);
        let mut roots = Vec::with_capacity(roots_orig.len());
        let mut placed = vec![false; n];
        let mut n_features = 0usize;
        let mut has_missing_tracks = false;
        for &root in &roots_orig {
            roots.push(nodes.len() as u32);
            // Depth first, false child first: (attribute position, parent to link as true child).
            let mut stack = vec![(root, None::<usize>)];
            while let Some((i, parent)) = stack.pop() {
                if placed[i] {
                    return Err(format!(
                        "node {} of tree {} is reached twice: the trees are not trees",
                        a.nodes_nodeids[i], a.nodes_treeids[i]
                    ));
                }
                placed[i] = true;
                let here = nodes.len();
                if let Some(p) = parent {
                    nodes[p].a = here as u32;
                }
                match modes[i] {
                    None => {
                        let lw = &leaf_weights[i];
                        let Some(&(_, first)) = lw.first() else {
                            return Err(format!("leaf {} of tree {} has no weight", a.nodes_nodeids[i], a.nodes_treeids[i]));
                        };
                        nodes.push(Node { feature: LEAF, value: first, a: weights.len() as u32, b: lw.len() as u32 });
                        weights.extend_from_slice(lw);
                    }
                    Some(mode) => {
                        let feature = a.nodes_featureids[i];
                        if !(0..i64::from(u32::MAX / 2)).contains(&feature) {
                            return Err(format!("a node reads feature {feature}"));
                        }
                        n_features = n_features.max(feature as usize + 1);
                        let tracks = missing.get(i).is_some_and(|&m| m != 0);
                        has_missing_tracks |= tracks;
                        nodes.push(Node {
                            feature: feature as u32,
                            value: a.nodes_values[i],
                            a: 0, // patched when the true child is placed
                            b: mode.code() | if tracks { MISSING_TRUE } else { 0 },
                        });
                        let t = child(i, a.nodes_truenodeids[i], "true")?;
                        let f = child(i, a.nodes_falsenodeids[i], "false")?;
                        stack.push((t, Some(here)));
                        stack.push((f, None));
                    }
                }
            }
        }
        let binary_case = a.n_targets == 2 && voted.len() == 1;
        Ok(TreeEnsemble {
            nodes,
            roots,
            weights,
            n_targets: a.n_targets,
            n_features,
            same_mode,
            has_missing_tracks,
            aggregate: a.aggregate,
            post_transform: a.post_transform,
            base_values: a.base_values.clone(),
            binary_case,
            weights_all_positive,
        })
    }

    /// Values a row must have at least.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    pub fn n_targets(&self) -> usize {
        self.n_targets
    }

    /// Regressor outputs: `rows * n_targets` values. `x` is `rows` rows of `stride` values.
    pub fn regress(&self, x: &[f32], rows: usize, stride: usize) -> Vec<f32> {
        let nt = self.n_targets;
        let (scores, has) = self.raw_scores(x, rows, stride);
        let mut out = vec![0f32; rows * nt];
        for r in 0..rows {
            let s = &scores[r * nt..(r + 1) * nt];
            let h = &has[r * nt..(r + 1) * nt];
            let o = &mut out[r * nt..(r + 1) * nt];
            if nt == 1 {
                o[0] = self.finalize_single(s[0], h[0]);
            } else {
                let mut v = self.finalize_many(s, h);
                self.post_transform.apply(&mut v);
                o.copy_from_slice(&v);
            }
        }
        out
    }

    /// Classifier outputs: the winning class's index per row and `rows * n_targets` scores.
    pub fn classify(&self, x: &[f32], rows: usize, stride: usize) -> (Vec<usize>, Vec<f32>) {
        let nt = self.n_targets;
        let (scores, has) = self.raw_scores(x, rows, stride);
        let mut labels = Vec::with_capacity(rows);
        let mut out = vec![0f32; rows * nt];
        let mut p: Vec<(f32, bool)> = Vec::with_capacity(nt);
        for r in 0..rows {
            p.clear();
            p.extend(scores[r * nt..(r + 1) * nt].iter().copied().zip(has[r * nt..(r + 1) * nt].iter().copied()));
            let o = &mut out[r * nt..(r + 1) * nt];
            labels.push(self.finalize_classes(&mut p, o));
        }
        (labels, out)
    }

    /// Aggregated (not yet finalized) scores and "has a score" flags, `rows * n_targets` each.
    fn raw_scores(&self, x: &[f32], rows: usize, stride: usize) -> (Vec<f32>, Vec<bool>) {
        let nt = self.n_targets;
        let mut scores = vec![0f32; rows * nt];
        let mut has = vec![false; rows * nt];
        if stride < self.n_features || x.len() < rows * stride {
            // Checked by the op before it gets here; an empty result rather than a panic.
            return (scores, has);
        }
        match (self.same_mode, self.has_missing_tracks) {
            (Some(Mode::Leq), false) => self.accumulate::<Leq, false>(x, rows, stride, &mut scores, &mut has),
            (Some(Mode::Leq), true) => self.accumulate::<Leq, true>(x, rows, stride, &mut scores, &mut has),
            (Some(Mode::Lt), false) => self.accumulate::<Lt, false>(x, rows, stride, &mut scores, &mut has),
            (Some(Mode::Gte), false) => self.accumulate::<Gte, false>(x, rows, stride, &mut scores, &mut has),
            (Some(Mode::Gt), false) => self.accumulate::<Gt, false>(x, rows, stride, &mut scores, &mut has),
            (_, false) => self.accumulate::<AnyMode, false>(x, rows, stride, &mut scores, &mut has),
            (_, true) => self.accumulate::<AnyMode, true>(x, rows, stride, &mut scores, &mut has),
        }
        (scores, has)
    }

    fn accumulate<C: Compare, const MISSING: bool>(&self, x: &[f32], rows: usize, stride: usize, scores: &mut [f32], has: &mut [bool]) {
        let nt = self.n_targets;
        let nodes = self.nodes.as_slice();
        for start in (0..rows).step_by(BLOCK_ROWS) {
            let end = rows.min(start + BLOCK_ROWS);
            for &root in &self.roots {
                for r in start..end {
                    let row = &x[r * stride..r * stride + stride];
                    let leaf = &nodes[walk::<C, MISSING>(nodes, root as usize, row)];
                    if nt == 1 {
                        // onnxruntime's single-target path: the leaf's first weight.
                        self.aggregate.add(&mut scores[r], &mut has[r], leaf.value);
                    } else {
                        let first = leaf.a as usize;
                        for &(t, v) in &self.weights[first..first + leaf.b as usize] {
                            let k = r * nt + t as usize;
                            self.aggregate.add(&mut scores[k], &mut has[k], v);
                        }
                    }
                }
            }
        }
    }

    /// One target (onnxruntime's `FinalizeScores1`): only a one-value base and PROBIT apply.
    fn finalize_single(&self, score: f32, has: bool) -> f32 {
        let origin = if self.base_values.len() == 1 { self.base_values[0] } else { 0.0 };
        match self.aggregate {
            Aggregate::Sum => score + origin,
            Aggregate::Average => score / self.roots.len() as f32 + origin,
            Aggregate::Min | Aggregate::Max => {
                if has {
                    score + origin
                } else {
                    origin
                }
            }
        }
    }

    /// Several targets (onnxruntime's `FinalizeScores`), before the post transform.
    fn finalize_many(&self, scores: &[f32], has: &[bool]) -> Vec<f32> {
        let base = (self.base_values.len() == scores.len()).then_some(&self.base_values);
        let n_trees = self.roots.len() as f32;
        scores
            .iter()
            .zip(has)
            .enumerate()
            .map(|(k, (&s, &h))| {
                let b = base.map_or(0.0, |b| b[k]);
                match self.aggregate {
                    Aggregate::Sum => s + b,
                    Aggregate::Average => s / n_trees + b,
                    Aggregate::Min | Aggregate::Max => b + if h { s } else { 0.0 },
                }
            })
            .collect()
    }

    /// A classifier row (onnxruntime's `TreeAggregatorClassifier::FinalizeScores`): writes the
    /// scores to `out` and returns the winning class's index.
    fn finalize_classes(&self, p: &mut [(f32, bool)], out: &mut [f32]) -> usize {
        let base = &self.base_values;
        if self.aggregate == Aggregate::Average {
            let n_trees = self.roots.len() as f32;
            for (s, _) in p.iter_mut() {
                *s /= n_trees;
            }
        }
        if self.n_targets > 2 {
            for (k, &b) in base.iter().enumerate().take(p.len()) {
                if p[k].1 {
                    p[k].0 += b;
                } else {
                    p[k] = (b, true);
                }
            }
            let mut best: Option<(usize, f32)> = None;
            for (k, &(s, h)) in p.iter().enumerate() {
                if h && best.is_none_or(|(_, m)| s > m) {
                    best = Some((k, s));
                }
            }
            let mut v: Vec<f32> = p.iter().map(|&(s, _)| s).collect();
            self.post_transform.apply(&mut v);
            out.copy_from_slice(&v);
            return best.map_or(0, |(k, _)| k);
        }
        // Two classes.
        let mut second_class = SecondClass::Unset;
        let mut n = 2;
        match base.len() {
            2 => {
                if p[1].1 {
                    // onnxruntime reads class 0's score here (it assumes both base values are
                    // equal and the leaves vote for one class); kept for identical outputs.
                    p[1].0 = base[1] + p[0].0;
                    p[0].0 = -p[1].0;
                } else {
                    p[1].0 += base[1];
                    p[0].0 += base[0];
                }
            }
            1 => {
                p[0].0 += base[0];
                if !p[1].1 {
                    n = 1;
                }
            }
            0 => {
                second_class = SecondClass::MixedNegative;
                if !p[1].1 {
                    n = 1;
                }
            }
            _ => {}
        }
        let pos_weight = if n == 2 && p[1].1 {
            p[1].0
        } else if p[0].1 {
            p[0].0
        } else {
            0.0
        };
        let label = if self.binary_case {
            let (positive, class) =
                if self.weights_all_positive { (pos_weight > 0.5, SecondClass::Positive) } else { (pos_weight > 0.0, SecondClass::Mixed) };
            second_class = class;
            usize::from(positive)
        } else {
            usize::from(pos_weight > 0.0)
        };
        if n == 2 {
            let mut v = [p[0].0, p[1].0];
            self.post_transform.apply(&mut v);
            out.copy_from_slice(&v);
        } else {
            let s = p[0].0;
            let pair = match second_class {
                SecondClass::Positive => [1.0 - s, s],
                SecondClass::Mixed | SecondClass::MixedNegative => {
                    if self.post_transform == PostTransform::Logistic {
                        [logistic(-s), logistic(s)]
                    } else {
                        [-s, s]
                    }
                }
                // onnxruntime writes only the first score here; the second is left at 0.
                SecondClass::Unset => [s, 0.0],
            };
            out.copy_from_slice(&pair);
        }
        label
    }
}

/// onnxruntime's `add_second_class`: how a binary classifier's single score becomes two.
#[derive(Clone, Copy)]
enum SecondClass {
    Unset,
    /// All weights positive: the score is a probability, `[1 - s, s]`.
    Positive,
    /// Mixed signs: a margin, `[-s, s]` (or its logistic).
    Mixed,
    /// No base values (onnxruntime's 3): as `Mixed`.
    MixedNegative,
}

impl Aggregate {
    #[inline(always)]
    fn add(self, score: &mut f32, has: &mut bool, v: f32) {
        match self {
            Aggregate::Sum | Aggregate::Average => *score += v,
            Aggregate::Min => {
                if !*has || v < *score {
                    *score = v;
                }
            }
            Aggregate::Max => {
                if !*has || v > *score {
                    *score = v;
                }
            }
        }
        *has = true;
    }
}

impl PostTransform {
    /// [`apply`](Self::apply) to each `width`-long row of `values`.
    pub fn apply_rows(self, values: &mut [f32], width: usize) {
        match self {
            PostTransform::Softmax => crate::onnx::rowwise::softmax_rows(values, width),
            PostTransform::None => {}
            _ => values.chunks_exact_mut(width.max(1)).for_each(|row| self.apply(row)),
        }
    }

    /// onnxruntime's `write_scores` for two or more scores.
    pub fn apply(self, v: &mut [f32]) {
        match self {
            PostTransform::None => {}
            PostTransform::Logistic => v.iter_mut().for_each(|s| *s = logistic(*s)),
            PostTransform::Softmax => softmax(v),
            PostTransform::SoftmaxZero => softmax_zero(v),
        }
    }
}

/// onnxruntime's `ComputeLogistic` (symmetric, so large negative inputs keep their precision).
pub fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 {
        1.0 - v
    } else {
        v
    }
}

/// onnxruntime's `ComputeSoftmax` (with this runner's vectorisable `exp`).
pub fn softmax(v: &mut [f32]) {
    let max = v.iter().copied().fold(-f32::MAX, f32::max);
    let mut sum = 0.0;
    for s in v.iter_mut() {
        *s = crate::onnx::rowwise::exp(*s - max);
        sum += *s;
    }
    for s in v.iter_mut() {
        *s /= sum;
    }
}

/// onnxruntime's `ComputeSoftmaxZero`: zeros stay zero.
fn softmax_zero(v: &mut [f32]) {
    let max = v.iter().copied().fold(-f32::MAX, f32::max);
    let exp_neg_max = (-max).exp();
    let mut sum = 0.0;
    for s in v.iter_mut() {
        if *s > 0.000_000_1 || *s < -0.000_000_1 {
            *s = (*s - max).exp();
            sum += *s;
        } else {
            *s *= exp_neg_max;
        }
    }
    for s in v.iter_mut() {
        *s /= sum;
    }
}

/// A node comparison, chosen at compile time for ensembles whose nodes share one mode.
trait Compare {
    fn goes_true(x: f32, threshold: f32, b: u32) -> bool;
}

struct Leq;
struct Lt;
struct Gte;
struct Gt;
/// Reads each node's own mode.
struct AnyMode;

impl Compare for Leq {
    #[inline(always)]
    fn goes_true(x: f32, t: f32, _: u32) -> bool {
        x <= t
    }
}
impl Compare for Lt {
    #[inline(always)]
    fn goes_true(x: f32, t: f32, _: u32) -> bool {
        x < t
    }
}
impl Compare for Gte {
    #[inline(always)]
    fn goes_true(x: f32, t: f32, _: u32) -> bool {
        x >= t
    }
}
impl Compare for Gt {
    #[inline(always)]
    fn goes_true(x: f32, t: f32, _: u32) -> bool {
        x > t
    }
}
impl Compare for AnyMode {
    #[inline(always)]
    fn goes_true(x: f32, t: f32, b: u32) -> bool {
        const LEQ: u32 = Mode::Leq as u32;
        const LT: u32 = Mode::Lt as u32;
        const GTE: u32 = Mode::Gte as u32;
        const GT: u32 = Mode::Gt as u32;
        const EQ: u32 = Mode::Eq as u32;
        match b & 0xff {
            LEQ => x <= t,
            LT => x < t,
            GTE => x >= t,
            GT => x > t,
            EQ => x == t,
            _ => x != t,
        }
    }
}

/// Walks one tree from `i` down to a leaf; returns the leaf's index. A NaN compares false (so
/// it goes to the false child, but true for `BRANCH_NEQ`) unless the node tracks missing values
/// to the true child.
#[inline(always)]
fn walk<C: Compare, const MISSING: bool>(nodes: &[Node], mut i: usize, row: &[f32]) -> usize {
    loop {
        let n = nodes[i];
        if n.feature == LEAF {
            return i;
        }
        let x = row[n.feature as usize];
        let t = C::goes_true(x, n.value, n.b) || (MISSING && n.b & MISSING_TRUE != 0 && x.is_nan());
        i = if t { n.a as usize } else { i + 1 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(feature, mode, threshold, [(target, true weight, false weight)])`.
    type Stump<'a> = (i64, &'a str, f32, &'a [(i64, f32, f32)]);

    /// One stump per entry: `x[feature] <mode> threshold` → leaf 1 (true) else leaf 2 (false),
    /// with weights `(target, true weight, false weight)`.
    fn stumps(stumps: &[Stump], n_targets: usize) -> Attributes {
        let mut a = Attributes { n_targets, ..Default::default() };
        for (tree, &(feature, mode, threshold, weights)) in stumps.iter().enumerate() {
            let tree = tree as i64;
            for (node, m) in [(0, mode), (1, "LEAF"), (2, "LEAF")] {
                a.nodes_treeids.push(tree);
                a.nodes_nodeids.push(node);
                a.nodes_featureids.push(if node == 0 { feature } else { 0 });
                a.nodes_values.push(if node == 0 { threshold } else { 0.0 });
                a.nodes_modes.push(m.to_string());
                a.nodes_truenodeids.push(if node == 0 { 1 } else { 0 });
                a.nodes_falsenodeids.push(if node == 0 { 2 } else { 0 });
            }
            for &(target, t, f) in weights {
                for (node, w) in [(1, t), (2, f)] {
                    a.target_treeids.push(tree);
                    a.target_nodeids.push(node);
                    a.target_ids.push(target);
                    a.target_weights.push(w);
                }
            }
        }
        a
    }

    fn regress(a: &Attributes, rows: &[&[f32]]) -> Vec<f32> {
        let e = TreeEnsemble::new(a).unwrap();
        let stride = rows[0].len();
        let x: Vec<f32> = rows.concat();
        e.regress(&x, rows.len(), stride)
    }

    fn classify(a: &Attributes, rows: &[&[f32]]) -> (Vec<usize>, Vec<f32>) {
        let e = TreeEnsemble::new(a).unwrap();
        let stride = rows[0].len();
        let x: Vec<f32> = rows.concat();
        e.classify(&x, rows.len(), stride)
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn branch_modes_send_equal_values_the_documented_way() {
        // Threshold 1.0; rows 0.5, 1.0, 1.5: true child gives 1, false child gives 0.
        for (mode, expected) in [
            ("BRANCH_LEQ", [1.0, 1.0, 0.0]),
            ("BRANCH_LT", [1.0, 0.0, 0.0]),
            ("BRANCH_GTE", [0.0, 1.0, 1.0]),
            ("BRANCH_GT", [0.0, 0.0, 1.0]),
            ("BRANCH_EQ", [0.0, 1.0, 0.0]),
            ("BRANCH_NEQ", [1.0, 0.0, 1.0]),
        ] {
            let a = stumps(&[(0, mode, 1.0, &[(0, 1.0, 0.0)])], 1);
            assert_eq!(regress(&a, &[&[0.5], &[1.0], &[1.5]]), expected, "{mode}");
        }
    }

    #[test]
    fn mixed_modes_use_each_nodes_own_mode() {
        let a = stumps(&[(0, "BRANCH_LT", 1.0, &[(0, 1.0, 0.0)]), (0, "BRANCH_EQ", 1.0, &[(0, 10.0, 0.0)])], 1);
        assert_eq!(TreeEnsemble::new(&a).unwrap().same_mode, None);
        assert_eq!(regress(&a, &[&[0.5], &[1.0], &[1.5]]), [1.0, 10.0, 0.0]);
    }

    #[test]
    fn missing_values_follow_their_track() {
        let mut a = stumps(&[(0, "BRANCH_LEQ", 1.0, &[(0, 1.0, 0.0)]), (1, "BRANCH_LEQ", 1.0, &[(0, 10.0, 0.0)])], 1);
        // Tree 0's root sends NaN to the true child; tree 1's does not.
        a.nodes_missing_value_tracks_true = vec![1, 0, 0, 0, 0, 0];
        assert_eq!(regress(&a, &[&[f32::NAN, f32::NAN], &[2.0, 0.0]]), [1.0, 10.0]);
        // Without tracks, NaN compares false everywhere (true only for NEQ).
        a.nodes_missing_value_tracks_true.clear();
        assert_eq!(regress(&a, &[&[f32::NAN, f32::NAN]]), [0.0]);
        let neq = stumps(&[(0, "BRANCH_NEQ", 1.0, &[(0, 1.0, 0.0)])], 1);
        assert_eq!(regress(&neq, &[&[f32::NAN]]), [1.0]);
    }

    #[test]
    fn deeper_trees_walk_the_false_child_first_layout() {
        // x0 <= 0 ? (x1 <= 0 ? 1 : 2) : (x1 <= 0 ? 3 : 4), node ids deliberately shuffled.
        let mut a = Attributes { n_targets: 1, ..Default::default() };
        let nodes = [
            (5, "BRANCH_LEQ", 0, 2, 9),
            (2, "BRANCH_LEQ", 1, 7, 0),
            (9, "BRANCH_LEQ", 1, 1, 3),
            (7, "LEAF", 0, 0, 0),
            (0, "LEAF", 0, 0, 0),
            (1, "LEAF", 0, 0, 0),
            (3, "LEAF", 0, 0, 0),
        ];
        for (id, mode, feature, t, f) in nodes {
            a.nodes_treeids.push(0);
            a.nodes_nodeids.push(id);
            a.nodes_featureids.push(feature);
            a.nodes_values.push(0.0);
            a.nodes_modes.push(mode.into());
            a.nodes_truenodeids.push(t);
            a.nodes_falsenodeids.push(f);
        }
        for (id, w) in [(7, 1.0), (0, 2.0), (1, 3.0), (3, 4.0)] {
            a.target_treeids.push(0);
            a.target_nodeids.push(id);
            a.target_ids.push(0);
            a.target_weights.push(w);
        }
        let rows: [&[f32]; 4] = [&[-1.0, -1.0], &[-1.0, 1.0], &[1.0, -1.0], &[1.0, 1.0]];
        assert_eq!(regress(&a, &rows), [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn aggregates_sum_average_min_max_with_base_values() {
        let trees: [Stump; 2] = [(0, "BRANCH_LEQ", 0.0, &[(0, 1.0, 2.0)]), (0, "BRANCH_LEQ", 0.0, &[(0, 5.0, 7.0)])];
        let mut a = stumps(&trees, 1);
        a.base_values = vec![100.0];
        for (agg, expected) in [
            (Aggregate::Sum, [106.0, 109.0]),
            (Aggregate::Average, [103.0, 104.5]),
            (Aggregate::Min, [101.0, 102.0]),
            (Aggregate::Max, [105.0, 107.0]),
        ] {
            a.aggregate = agg;
            assert_eq!(regress(&a, &[&[-1.0], &[1.0]]), expected, "{agg:?}");
        }
    }

    #[test]
    fn multi_target_regressor_adds_base_values_per_target_and_post_transforms() {
        let mut a = stumps(&[(0, "BRANCH_LEQ", 0.0, &[(0, 1.0, 2.0), (1, 3.0, 4.0)])], 2);
        a.base_values = vec![10.0, 20.0];
        close(&regress(&a, &[&[-1.0], &[1.0]]), &[11.0, 23.0, 12.0, 24.0]);
        a.post_transform = PostTransform::Softmax;
        let e = 1.0 / (1.0 + (-12f32).exp());
        close(&regress(&a, &[&[-1.0]]), &[1.0 - e, e]);
        // A single-target regressor ignores every post transform but PROBIT (onnxruntime).
        let mut one = stumps(&[(0, "BRANCH_LEQ", 0.0, &[(0, 1.0, 2.0)])], 1);
        one.post_transform = PostTransform::Logistic;
        assert_eq!(regress(&one, &[&[-1.0]]), [1.0]);
    }

    #[test]
    fn multiclass_softmax_and_argmax() {
        // Gradient-boosting style: one tree per class.
        let trees: [Stump; 3] = [
            (0, "BRANCH_LEQ", 0.0, &[(0, 2.0, -1.0)]),
            (0, "BRANCH_LEQ", 0.0, &[(1, -1.0, 2.0)]),
            (0, "BRANCH_LEQ", 0.0, &[(2, 0.0, 0.0)]),
        ];
        let mut a = stumps(&trees, 3);
        a.base_values = vec![0.0, 0.0, 0.5];
        a.post_transform = PostTransform::Softmax;
        let (labels, scores) = classify(&a, &[&[-1.0], &[1.0]]);
        assert_eq!(labels, [0, 1]);
        let mut expected = [2.0, -1.0, 0.5, -1.0, 2.0, 0.5];
        softmax(&mut expected[..3]);
        softmax(&mut expected[3..]);
        close(&scores, &expected);
        a.post_transform = PostTransform::None;
        close(&classify(&a, &[&[-1.0]]).1, &[2.0, -1.0, 0.5]);
    }

    #[test]
    fn multiclass_forest_averages_votes() {
        // Random-forest style: every leaf votes for every class, weights pre-divided.
        let trees: [Stump; 2] = [
            (0, "BRANCH_LEQ", 0.0, &[(0, 0.5, 0.0), (1, 0.0, 0.25), (2, 0.0, 0.25)]),
            (0, "BRANCH_LEQ", 0.5, &[(0, 0.5, 0.0), (1, 0.0, 0.0), (2, 0.0, 0.5)]),
        ];
        let a = stumps(&trees, 3);
        let (labels, scores) = classify(&a, &[&[-1.0], &[0.25], &[1.0]]);
        assert_eq!(labels, [0, 0, 2]);
        close(&scores, &[1.0, 0.0, 0.0, 0.5, 0.25, 0.25, 0.0, 0.25, 0.75]);
    }

    #[test]
    fn binary_forest_voting_for_one_class_gives_the_complement() {
        // skl2onnx's binary random forest: leaves hold P(class 1) under class id 0, no base.
        let trees: [Stump; 2] = [(0, "BRANCH_LEQ", 0.0, &[(0, 0.1, 0.4)]), (0, "BRANCH_LEQ", 0.5, &[(0, 0.2, 0.45)])];
        let a = stumps(&trees, 2);
        let (labels, scores) = classify(&a, &[&[-1.0], &[0.25], &[1.0]]);
        assert_eq!(labels, [0, 1, 1], "class 1 wins above 0.5");
        close(&scores, &[0.7, 0.3, 0.4, 0.6, 0.15, 0.85]);
        // Exactly 0.5 is not above 0.5.
        let half = stumps(&[(0, "BRANCH_LEQ", 0.0, &[(0, 0.5, 0.5)])], 2);
        assert_eq!(classify(&half, &[&[0.0]]).0, [0]);
    }

    #[test]
    fn binary_boosting_with_one_base_value_is_a_logistic_margin() {
        // skl2onnx's binary gradient boosting: one base value, LOGISTIC, signed weights.
        let mut a = stumps(&[(0, "BRANCH_LEQ", 0.0, &[(0, -2.0, 1.0)])], 2);
        a.base_values = vec![0.5];
        a.post_transform = PostTransform::Logistic;
        let (labels, scores) = classify(&a, &[&[-1.0], &[1.0]]);
        assert_eq!(labels, [0, 1]);
        close(&scores, &[logistic(1.5), logistic(-1.5), logistic(-1.5), logistic(1.5)]);
        // Without a post transform the margin is written as [-s, s].
        a.post_transform = PostTransform::None;
        close(&classify(&a, &[&[1.0]]).1, &[-1.5, 1.5]);
    }

    #[test]
    fn binary_with_two_base_values() {
        // Leaves vote for class 1 only: onnxruntime's "has a score for class 1" branch.
        let mut a = stumps(&[(0, "BRANCH_LEQ", 0.0, &[(1, -2.0, 1.0)])], 2);
        a.base_values = vec![0.5, 0.5];
        let (labels, scores) = classify(&a, &[&[-1.0], &[1.0]]);
        // It adds class 0's (empty) score to the second base value: 0.5 whatever the leaf.
        assert_eq!(labels, [1, 1]);
        close(&scores, &[-0.5, 0.5, -0.5, 0.5]);
        // Leaves vote for class 0 only: "binary as multiclass", each class its own base.
        let mut b = stumps(&[(0, "BRANCH_LEQ", 0.0, &[(0, -2.0, 1.0)])], 2);
        b.base_values = vec![0.25, 0.75];
        let (labels, scores) = classify(&b, &[&[-1.0], &[1.0]]);
        close(&scores, &[-1.75, 0.75, 1.25, 0.75]);
        // pos_weight is class 0's score (class 1 has none): positive above 0 (mixed signs).
        assert_eq!(labels, [0, 1]);
    }

    #[test]
    fn binary_voting_for_both_classes_compares_class_one_with_zero() {
        let a = stumps(&[(0, "BRANCH_LEQ", 0.0, &[(0, 0.9, 0.2), (1, 0.1, 0.8)])], 2);
        let (labels, scores) = classify(&a, &[&[-1.0], &[1.0]]);
        // Not the "binary case" (votes for two classes): class 1 whenever its score is > 0.
        assert_eq!(labels, [1, 1]);
        close(&scores, &[0.9, 0.1, 0.2, 0.8]);
    }

    #[test]
    fn broken_ensembles_are_refused_with_a_reason() {
        let good = stumps(&[(0, "BRANCH_LEQ", 0.0, &[(0, 1.0, 2.0)])], 1);
        let check = |a: Attributes, needle: &str| {
            let e = TreeEnsemble::new(&a).unwrap_err();
            assert!(e.contains(needle), "{e}");
        };
        let mut a = good.clone();
        a.nodes_truenodeids[0] = 0;
        check(a, "its own child");
        let mut a = good.clone();
        a.nodes_falsenodeids[0] = 42;
        check(a, "does not exist");
        let mut a = good.clone();
        a.nodes_modes[0] = "BRANCH_SOMETIMES".into();
        check(a, "unknown node mode");
        let mut a = good.clone();
        a.target_ids[0] = 3;
        check(a, "target 3");
        let mut a = good.clone();
        a.nodes_values.pop();
        check(a, "nodes_values");
        let mut a = good.clone();
        a.target_nodeids = vec![1, 1];
        check(a, "no weight");
        // Both children the same node: reached twice.
        let mut a = good.clone();
        a.nodes_falsenodeids[0] = 1;
        check(a, "reached twice");
        check(Attributes::default(), "no nodes");
    }

    #[test]
    fn short_rows_give_zeros_not_a_panic() {
        let a = stumps(&[(3, "BRANCH_LEQ", 0.0, &[(0, 1.0, 2.0)])], 1);
        let e = TreeEnsemble::new(&a).unwrap();
        assert_eq!(e.n_features(), 4);
        assert_eq!(e.regress(&[1.0, 2.0], 1, 2), [0.0]);
    }

    #[test]
    fn big_batches_match_row_by_row() {
        let trees: Vec<Stump> = (0..7).map(|i| (i % 3, "BRANCH_LEQ", i as f32 * 0.1, &[(0, 1.0, -1.0), (1, 0.5, 0.25)][..])).collect();
        let a = stumps(&trees, 2);
        let e = TreeEnsemble::new(&a).unwrap();
        let rows = 1000;
        let x: Vec<f32> = (0..rows * 3).map(|i| ((i * 37 % 101) as f32) / 100.0).collect();
        let all = e.regress(&x, rows, 3);
        for r in (0..rows).step_by(97) {
            assert_eq!(e.regress(&x[r * 3..r * 3 + 3], 1, 3), all[r * 2..r * 2 + 2]);
        }
    }
}
