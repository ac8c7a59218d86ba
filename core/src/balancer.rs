//! The load balancer's choice, as one pure function: which node runs a job.
//!
//! A job sees only the nodes of its pool (see [`crate::access::may_run`]): its owner's, and
//! those shared with its owner unless it was kept to its owner's nodes. Nodes outside the pool
//! are not candidates at all, and nodes of other owners are listed without their names, so a
//! decision tells its reader nothing about machines that are not theirs.
//!
//! Eligible: active, enabled (not disabled, draining or removed), not overheated, room for a
//! job (a free slot, or a place in the few jobs a fast node holds ahead, see
//! [`NodeState::ahead`]), and able to run the job (a script job needs its runtime on the node, and the owner's
//! consent to scripts). A busy node (score 0: no free CPU at its last heartbeat) stays eligible
//! and comes last: its slots are the capacity its owner lent, and a fleet that is busy for a
//! while must not starve the queue.
//! A node with a free slot comes before one that would only hold the job ahead.
//! Among those the highest *effective* score wins: the node's score, tempered by what the server
//! saw of its recent attempts (`observed`, see [`Candidate::observed`]), shared among the jobs it
//! already holds, `score × observed / (1 + in_flight)`, so a burst spreads out before the next
//! heartbeats tell the truth, and a node that claims more than it delivers loses its work. A job that failed or was lost on some nodes prefers the others (they are
//! still used when nothing else can take it). Ties go to the lowest node id, so the same inputs
//! give the same answer.

use shared::jobs::{AppKind, Candidate};

use crate::access::{may_run, NodeAccess};
use crate::{AdminState, NodeStatus, Pool, Sharing};

/// How other owners' nodes are named to a job's owner.
pub const SHARED_NODE_NAME: &str = "a shared node";

/// A node's name as the owner of a job sees it: their own node by its name, anyone else's as
/// [`SHARED_NODE_NAME`] (decisions, job pages and timelines all name nodes this way).
pub fn node_name_for(job_owner: &str, node_owner: &str, name: &str) -> String {
    if node_owner == job_owner {
        name.to_string()
    } else {
        SHARED_NODE_NAME.to_string()
    }
}

/// One node as the balancer sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeState {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub sharing: Sharing,
    /// The users it is shared with, when `sharing` is [`Sharing::Users`].
    pub shared_with: Vec<String>,
    pub status: NodeStatus,
    pub admin_state: AdminState,
    /// From the latest heartbeat; `None` before the first one.
    pub score: Option<f64>,
    /// At or above the critical temperature at the latest heartbeat.
    pub overheated: bool,
    /// The performance factor of the score (benchmark and free RAM): orders nodes whose score is
    /// 0 for want of free CPU, which would otherwise all tie.
    pub perf: f64,
    pub max_jobs: u32,
    /// Jobs it may hold now beyond `max_jobs`, started by the agent the moment a slot frees: its
    /// `--queue-ahead` while its jobs come and go quickly, else 0 (see the scheduler).
    pub ahead: u32,
    pub accepts_scripts: bool,
    pub runtimes: Vec<String>,
    /// Jobs sent to it and not finished.
    pub in_flight: u32,
    /// Its track record against the fleet's, in [`shared::jobs::OBSERVED_MIN`]..=1 (see
    /// [`Candidate::observed`]).
    pub observed: f64,
}

impl NodeState {
    fn free_slot(&self) -> bool {
        self.in_flight < self.max_jobs
    }

    /// Jobs it may have in flight now: its slots and the places it holds ahead.
    fn capacity(&self) -> u32 {
        self.max_jobs.saturating_add(self.ahead)
    }

    fn access(&self) -> NodeAccess<'_> {
        NodeAccess { owner_id: &self.owner_id, sharing: self.sharing, shared_with: &self.shared_with }
    }
}

/// What a job needs from a node.
#[derive(Clone, Debug, PartialEq)]
pub struct Need {
    /// The job's owner and the nodes they allowed it on.
    pub owner_id: String,
    pub pool: Pool,
    pub kind: AppKind,
    pub runtime: Option<String>,
    /// Nodes the job's earlier attempts ran on.
    pub tried: Vec<String>,
}

/// Why a node cannot take a job now; shown as text on the job's page. No text is made until
/// it is shown: the balancer looks at every node of a large fleet for every job.
#[derive(Clone, Copy, Debug)]
enum Exclusion<'a> {
    Status(NodeStatus),
    Admin(AdminState),
    Busy { in_flight: u32, max_jobs: u32, ahead: u32 },
    NoScripts,
    NoRuntime(&'a str),
    Overheated,
    NoHeartbeat,
    BadScore,
}

impl std::fmt::Display for Exclusion<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Exclusion::Status(s) => write!(f, "node is {s}"),
            Exclusion::Admin(a) => write!(f, "node is {a}"),
            Exclusion::Busy { in_flight, max_jobs, ahead: 0 } => write!(f, "no free slot ({in_flight} of {max_jobs} busy)"),
            Exclusion::Busy { max_jobs, ahead, .. } => write!(f, "no free slot ({max_jobs} of {max_jobs} busy, {ahead} held ahead)"),
            Exclusion::NoScripts => f.write_str("the node does not run script jobs"),
            Exclusion::NoRuntime(r) => write!(f, "no {r} on the node"),
            Exclusion::Overheated => f.write_str("overheated (at or above the critical temperature)"),
            Exclusion::NoHeartbeat => f.write_str("no heartbeat yet"),
            Exclusion::BadScore => f.write_str("no valid score"),
        }
    }
}

/// Why the node cannot take a job of `kind` (needing `runtime`) now, if it cannot.
fn exclusion<'a>(node: &NodeState, kind: AppKind, runtime: Option<&'a str>) -> Option<Exclusion<'a>> {
    if node.status != NodeStatus::Active {
        return Some(Exclusion::Status(node.status));
    }
    if !node.admin_state.takes_jobs() {
        return Some(Exclusion::Admin(node.admin_state));
    }
    if node.in_flight >= node.capacity() {
        return Some(Exclusion::Busy { in_flight: node.in_flight, max_jobs: node.max_jobs, ahead: node.ahead });
    }
    if kind == AppKind::Script {
        if !node.accepts_scripts {
            return Some(Exclusion::NoScripts);
        }
        if let Some(runtime) = runtime {
            if !node.runtimes.iter().any(|r| r == runtime) {
                return Some(Exclusion::NoRuntime(runtime));
            }
        }
    }
    if node.overheated {
        return Some(Exclusion::Overheated);
    }
    match node.score {
        None => Some(Exclusion::NoHeartbeat),
        Some(s) if !s.is_finite() => Some(Exclusion::BadScore),
        Some(_) => None,
    }
}

/// [`exclusion`] as the text a page shows.
fn excluded(node: &NodeState, kind: AppKind, runtime: Option<&str>) -> Option<String> {
    exclusion(node, kind, runtime).map(|e| e.to_string())
}

/// Whether the node could take some job now (an ONNX job, the kind that needs least): the
/// dispatcher stops reading the queue when no node can.
pub fn has_room(node: &NodeState) -> bool {
    exclusion(node, AppKind::Onnx, None).is_none()
}

/// How many jobs the node could take now (as [`has_room`] sees it): its free slots and places
/// ahead, or 0.
pub fn room(node: &NodeState) -> u32 {
    if has_room(node) {
        node.capacity().saturating_sub(node.in_flight)
    } else {
        0
    }
}

/// Candidates the dispatcher records with a decision, at most: the winner and the best of the
/// rest. Every node of a large fleet in every job's record was 1.5 MB of JSON per job at 10 000
/// nodes (`core/examples/placement_bench.rs`).
pub const RECORDED: usize = 16;

/// Every node of the job's pool as a candidate with its effective score (other owners' nodes
/// unnamed), and the index in `nodes` of the winner, if any.
pub fn pick(need: &Need, nodes: &[NodeState]) -> (Option<usize>, Vec<Candidate>) {
    let (best, candidates, _) = pick_recorded(need, nodes, usize::MAX);
    (best, candidates)
}

/// [`pick`], recording at most `max` candidates: the winner and the eligible nodes with the
/// highest effective scores (then the others), in the order of `nodes`. Also returns how many
/// of the pool were left out.
pub fn pick_recorded(need: &Need, nodes: &[NodeState], max: usize) -> (Option<usize>, Vec<Candidate>, usize) {
    use std::cmp::{Ordering, Reverse};
    let effective = |n: &NodeState| n.score.unwrap_or(0.0) * n.observed / (1.0 + f64::from(n.in_flight));
    let tried = |n: &NodeState| need.tried.contains(&n.id);
    let runtime = need.runtime.as_deref();
    // A node not tried before; then one with a free slot (over holding the job ahead); then the
    // highest effective score; then (busy nodes all score 0) the higher performance shared the
    // same way; then the lowest id.
    let better = |a: &NodeState, b: &NodeState| -> Ordering {
        let perf = |n: &NodeState| n.perf * n.observed / (1.0 + f64::from(n.in_flight));
        tried(b)
            .cmp(&tried(a))
            .then_with(|| a.free_slot().cmp(&b.free_slot()))
            .then_with(|| effective(a).total_cmp(&effective(b)))
            .then_with(|| perf(a).total_cmp(&perf(b)))
            .then_with(|| b.id.cmp(&a.id))
    };
    // One pass that makes nothing per node: the winner, the pool's size, and the best `max`
    // nodes to record (eligible first, then by effective score, then by position), kept in a
    // heap whose top is the least of them.
    let (mut best, mut pool) = (None::<usize>, 0usize);
    let mut kept: std::collections::BinaryHeap<Reverse<(bool, OrdF64, Reverse<usize>)>> = std::collections::BinaryHeap::new();
    for (i, n) in nodes.iter().enumerate() {
        if may_run(n.access(), &need.owner_id, need.pool).is_err() {
            continue;
        }
        pool += 1;
        let eligible = exclusion(n, need.kind, runtime).is_none();
        if eligible && best.is_none_or(|b| better(n, &nodes[b]) == Ordering::Greater) {
            best = Some(i);
        }
        if max > 0 {
            kept.push(Reverse((eligible, OrdF64(effective(n)), Reverse(i))));
            if kept.len() > max {
                kept.pop();
            }
        }
    }
    let mut shown: Vec<usize> = kept.into_iter().map(|Reverse((_, _, Reverse(i)))| i).collect();
    shown.sort_unstable();
    // The winner is always recorded, in place of the least of the others if need be.
    if let Some(b) = best.filter(|b| max > 0 && shown.binary_search(b).is_err()) {
        let least = shown.iter().enumerate().min_by(|(_, &x), (_, &y)| {
            let key = |k: usize| (exclusion(&nodes[k], need.kind, runtime).is_none(), OrdF64(effective(&nodes[k])), Reverse(k));
            key(x).cmp(&key(y))
        });
        if let Some((at, _)) = least {
            shown.remove(at);
        }
        let at = shown.binary_search(&b).unwrap_or_else(|at| at);
        shown.insert(at, b);
    }
    let left_out = pool - shown.len();
    let candidates = shown
        .into_iter()
        .map(|i| {
            let n = &nodes[i];
            Candidate {
                node_id: n.id.clone(),
                node_name: node_name_for(&need.owner_id, &n.owner_id, &n.name),
                score: n.score.unwrap_or(0.0),
                in_flight: n.in_flight,
                max_jobs: n.max_jobs,
                ahead: n.ahead,
                observed: n.observed,
                effective: effective(n),
                excluded: excluded(n, need.kind, runtime),
                tried: tried(n),
            }
        })
        .collect();
    (best, candidates, left_out)
}

/// An `f64` ordered by `total_cmp`, for sort keys.
#[derive(Clone, Copy, PartialEq)]
struct OrdF64(f64);

impl Eq for OrdF64 {}

impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Why no node of its pool takes a job now, for its page: the nodes counted by reason, most
/// first, e.g. "3 nodes: no python3 on the node; 1 node: no free slot". The per-node detail of a
/// reason (in parentheses) is left out so alike nodes add up; other owners' nodes are only
/// counted. `None` when some node could take it (it goes out with the next dispatch round).
pub fn why_waiting(need: &Need, nodes: &[NodeState]) -> Option<String> {
    let mut reasons: Vec<(String, u32)> = Vec::new();
    for node in nodes.iter().filter(|n| may_run(n.access(), &need.owner_id, need.pool).is_ok()) {
        let reason = excluded(node, need.kind, need.runtime.as_deref())?;
        let head = reason.split(" (").next().unwrap_or(&reason).to_string();
        match reasons.iter_mut().find(|(r, _)| *r == head) {
            Some((_, n)) => *n += 1,
            None => reasons.push((head, 1)),
        }
    }
    if reasons.is_empty() {
        return Some(match need.pool {
            Pool::Own => "no node of yours to run it on (it was kept to your own nodes)".into(),
            Pool::Shared => "no node to run it on: add one, or ask an owner to share theirs".into(),
        });
    }
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let parts: Vec<String> = reasons.iter().map(|(reason, n)| format!("{n} node{}: {reason}", if *n == 1 { "" } else { "s" })).collect();
    Some(parts.join("; "))
}

/// A node's track record against the fleet's, from the attempts that ended on it lately:
/// `ok` succeeded, `bad` failed or lost. Each rate is smoothed (one success and one failure
/// assumed), so a new node starts near the fleet; a node that fails no more often than the fleet
/// (a broken model fails everywhere) keeps 1; one that fails more is scaled down by how much,
/// never below [`shared::jobs::OBSERVED_MIN`].
pub fn observed(node: (u64, u64), fleet: (u64, u64)) -> f64 {
    let rate = |(ok, bad): (u64, u64)| (ok as f64 + 1.0) / ((ok + bad) as f64 + 2.0);
    (rate(node) / rate(fleet)).clamp(shared::jobs::OBSERVED_MIN, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, score: f64) -> NodeState {
        NodeState {
            id: id.into(),
            name: id.into(),
            owner_id: "owner".into(),
            sharing: Sharing::Private,
            shared_with: vec![],
            observed: 1.0,
            status: NodeStatus::Active,
            admin_state: AdminState::Enabled,
            score: Some(score),
            overheated: false,
            perf: 0.2,
            max_jobs: 4,
            ahead: 0,
            accepts_scripts: true,
            runtimes: vec!["python3".into()],
            in_flight: 0,
        }
    }

    fn onnx() -> Need {
        Need { owner_id: "owner".into(), pool: Pool::Shared, kind: AppKind::Onnx, runtime: None, tried: vec![] }
    }

    fn winner(need: &Need, nodes: &[NodeState]) -> Option<String> {
        pick(need, nodes).0.map(|i| nodes[i].id.clone())
    }

    #[test]
    fn highest_score_wins_not_lowest() {
        let nodes = [node("a", 1.0), node("b", 3.0), node("c", 2.0)];
        assert_eq!(winner(&onnx(), &nodes).as_deref(), Some("b"));
    }

    #[test]
    fn ties_break_by_lowest_id_whatever_the_order() {
        let nodes = [node("c", 2.0), node("a", 2.0), node("b", 2.0)];
        assert_eq!(winner(&onnx(), &nodes).as_deref(), Some("a"));
        let reversed: Vec<_> = nodes.iter().rev().cloned().collect();
        assert_eq!(winner(&onnx(), &reversed).as_deref(), Some("a"));
    }

    #[test]
    fn jobs_in_flight_share_the_score_so_a_burst_spreads() {
        let mut nodes = vec![node("fast", 3.0), node("slow", 2.0)];
        let mut picks = Vec::new();
        for _ in 0..5 {
            let i = pick(&onnx(), &nodes).0.unwrap();
            nodes[i].in_flight += 1;
            picks.push(nodes[i].id.clone());
        }
        // fast 3 | slow 2 vs fast 1.5 | fast 1.5 vs slow 1 | tie 1 vs 1: the equal performance
        // factors shared among fewer jobs on slow | fast 1 vs slow 0.67.
        assert_eq!(picks, ["fast", "slow", "fast", "slow", "fast"]);
    }

    #[test]
    fn a_waiting_job_says_why_counted_per_reason() {
        let script = Need { kind: AppKind::Script, runtime: Some("sh".into()), ..onnx() };
        let mut full = [node("a", 1.0), node("b", 1.0)];
        full.iter_mut().for_each(|n| n.in_flight = 4);
        let mut dead = node("c", 1.0);
        dead.status = NodeStatus::Dead;
        let mut nodes = vec![node("d", 1.0), node("e", 1.0), node("f", 1.0), dead];
        nodes.extend(full.clone());
        // Another owner's private node is not in the pool: not counted.
        let mut stranger = node("g", 1.0);
        stranger.owner_id = "someone else".into();
        nodes.push(stranger);
        assert_eq!(
            why_waiting(&script, &nodes).as_deref(),
            Some("3 nodes: no sh on the node; 2 nodes: no free slot; 1 node: node is dead")
        );
        // Some node can take it: no reason to give.
        assert_eq!(why_waiting(&onnx(), &nodes), None);
        assert_eq!(why_waiting(&onnx(), &full).as_deref(), Some("2 nodes: no free slot"));
        let own = Need { pool: Pool::Own, owner_id: "nobody".into(), ..onnx() };
        assert!(why_waiting(&own, &nodes).unwrap().starts_with("no node of yours"));
    }

    #[test]
    fn ineligible_nodes_are_excluded_with_a_reason() {
        let mut dead = node("dead", 9.0);
        dead.status = NodeStatus::Dead;
        let mut disabled = node("disabled", 9.0);
        disabled.admin_state = AdminState::Disabled;
        let mut draining = node("draining", 9.0);
        draining.admin_state = AdminState::Draining;
        let mut full = node("full", 9.0);
        full.in_flight = 4;
        let mut hot = node("hot", 0.0);
        hot.overheated = true;
        let mut fresh = node("fresh", 1.0);
        fresh.score = None;
        let nodes = [dead, disabled, draining, full, hot, fresh, node("ok", 0.5)];
        let (best, cands) = pick(&onnx(), &nodes);
        assert_eq!(best, Some(6));
        let reasons: Vec<_> = cands.iter().map(|c| c.excluded.clone().unwrap_or_default()).collect();
        assert_eq!(reasons[0], "node is dead");
        assert_eq!(reasons[1], "node is disabled");
        assert_eq!(reasons[2], "node is draining");
        assert_eq!(reasons[3], "no free slot (4 of 4 busy)");
        assert!(reasons[4].starts_with("overheated"));
        assert_eq!(reasons[5], "no heartbeat yet");
        assert_eq!(reasons[6], "");
    }

    #[test]
    fn script_jobs_need_the_runtime_and_consent() {
        let need = Need { kind: AppKind::Script, runtime: Some("python3".into()), ..onnx() };
        let mut no_python = node("no-python", 9.0);
        no_python.runtimes.clear();
        let mut refuses = node("refuses", 9.0);
        refuses.accepts_scripts = false;
        let nodes = [no_python.clone(), refuses.clone(), node("py", 1.0)];
        assert_eq!(winner(&need, &nodes).as_deref(), Some("py"));
        assert_eq!(winner(&need, &[no_python.clone(), refuses]), None);
        // ONNX jobs do not care.
        assert_eq!(winner(&onnx(), &[no_python]).as_deref(), Some("no-python"));
    }

    #[test]
    fn a_large_pool_records_the_winner_and_the_best_of_the_rest_in_node_order() {
        // 40 nodes; the odd ones dead; scores rise with the index, so the best eligible are the
        // highest even indices. The winner is the same as when everything is recorded.
        let nodes: Vec<NodeState> = (0..40)
            .map(|i| {
                let mut n = node(&format!("n{i:02}"), f64::from(i) / 40.0);
                if i % 2 == 1 {
                    n.status = NodeStatus::Dead;
                }
                n
            })
            .collect();
        let (all_best, all) = pick(&onnx(), &nodes);
        let (best, recorded, more) = pick_recorded(&onnx(), &nodes, 4);
        assert_eq!(best, all_best);
        assert_eq!((all.len(), recorded.len(), more), (40, 4, 36));
        let ids: Vec<&str> = recorded.iter().map(|c| c.node_id.as_str()).collect();
        assert_eq!(ids, ["n32", "n34", "n36", "n38"], "the best eligible, in node order");
        assert_eq!(nodes[best.unwrap()].id, "n38");
        assert!(recorded.iter().all(|c| c.excluded.is_none()));
        // The recorded rows are the same as the full list's rows for those nodes.
        for c in &recorded {
            assert_eq!(Some(c), all.iter().find(|a| a.node_id == c.node_id));
        }
    }

    #[test]
    fn nothing_eligible_means_no_pick_but_all_candidates_listed() {
        let mut n = node("a", 1.0);
        n.status = NodeStatus::Dead;
        let (best, cands) = pick(&onnx(), &[n]);
        assert_eq!(best, None);
        assert_eq!(cands.len(), 1);
    }

    #[test]
    fn a_retried_job_prefers_nodes_it_has_not_failed_on() {
        let nodes = [node("a", 9.0), node("b", 1.0)];
        let need = Need { tried: vec!["a".into()], ..onnx() };
        let (best, cands) = pick(&need, &nodes);
        assert_eq!(best, Some(1), "the weaker node it has not tried");
        assert!(cands[0].tried && !cands[1].tried);
        // Tried everywhere: the best of them again rather than nothing.
        let need = Need { tried: vec!["a".into(), "b".into()], ..onnx() };
        assert_eq!(winner(&need, &nodes).as_deref(), Some("a"));
        // An untried node that cannot take it does not count.
        let mut full = node("b", 1.0);
        full.in_flight = 4;
        let need = Need { tried: vec!["a".into()], ..onnx() };
        assert_eq!(winner(&need, &[node("a", 9.0), full]).as_deref(), Some("a"));
    }

    #[test]
    fn busy_nodes_are_ordered_by_performance() {
        let mut slow = node("a-slow", 0.0);
        slow.perf = 0.1;
        let mut fast = node("b-fast", 0.0);
        fast.perf = 9.0;
        assert_eq!(winner(&onnx(), &[slow, fast]).as_deref(), Some("b-fast"));
    }

    #[test]
    fn a_busy_node_is_still_eligible_but_comes_last() {
        let busy = node("busy", 0.0);
        assert_eq!(winner(&onnx(), &[busy.clone(), node("z-idle", 0.01)]).as_deref(), Some("z-idle"));
        let (best, cands) = pick(&onnx(), std::slice::from_ref(&busy));
        assert_eq!(best, Some(0));
        assert_eq!(cands[0].excluded, None);
    }

    #[test]
    fn free_slots_fill_before_any_node_holds_jobs_ahead() {
        let mut strong = node("strong", 9.0);
        strong.max_jobs = 1;
        strong.ahead = 2;
        let mut weak = node("weak", 0.1);
        weak.max_jobs = 1;
        weak.ahead = 2;
        let mut nodes = vec![strong, weak];
        assert_eq!(nodes.iter().map(room).sum::<u32>(), 6);
        let mut picks = Vec::new();
        while let (Some(i), _) = pick(&onnx(), &nodes) {
            nodes[i].in_flight += 1;
            picks.push(nodes[i].id.clone());
        }
        // Both slots first (the weak node's free slot beats holding a job on the strong one),
        // then the strong node's held places, shared by score as usual, then nothing.
        assert_eq!(picks[..2], ["strong", "weak"]);
        assert_eq!(picks.len(), 6);
        assert!(nodes.iter().all(|n| room(n) == 0));
        let (_, cands) = pick(&onnx(), &nodes);
        assert_eq!(cands[0].excluded.as_deref(), Some("no free slot (1 of 1 busy, 2 held ahead)"));
        assert_eq!(cands[0].ahead, 2);
    }

    #[test]
    fn a_job_sees_only_its_pool_and_other_owners_nodes_unnamed() {
        let mine = node("mine", 1.0);
        let mut private = node("private", 9.0);
        private.owner_id = "mallory".into();
        let mut open = node("open", 5.0);
        open.owner_id = "bob".into();
        open.sharing = Sharing::Everyone;
        let mut named = node("named", 7.0);
        named.owner_id = "carol".into();
        named.sharing = Sharing::Users;
        named.shared_with = vec!["owner".into()];
        let nodes = [mine, private, open, named];

        // The strongest node is private to Mallory: not a candidate, not even listed.
        let (best, cands) = pick(&onnx(), &nodes);
        assert_eq!(best.map(|i| nodes[i].id.as_str()), Some("named"));
        let listed: Vec<_> = cands.iter().map(|c| (c.node_id.as_str(), c.node_name.as_str())).collect();
        assert_eq!(listed, [("mine", "mine"), ("open", SHARED_NODE_NAME), ("named", SHARED_NODE_NAME)]);

        // Kept to its owner's nodes, the job sees only them.
        let (best, cands) = pick(&Need { pool: Pool::Own, ..onnx() }, &nodes);
        assert_eq!(best.map(|i| nodes[i].id.as_str()), Some("mine"));
        assert_eq!(cands.len(), 1);

        // Someone the named node is not shared with gets the open one.
        let (best, cands) = pick(&Need { owner_id: "dave".into(), ..onnx() }, &nodes);
        assert_eq!(best.map(|i| nodes[i].id.as_str()), Some("open"));
        assert_eq!(cands.len(), 1);
    }

    #[test]
    fn a_node_that_fails_more_than_the_fleet_loses_its_work() {
        // The fleet: 90 % of attempts succeed lately.
        let fleet = (900, 100);
        assert!((observed((90, 10), fleet) - 1.0).abs() < 0.01, "as good as the fleet");
        assert_eq!(observed((100, 0), fleet), 1.0, "better than the fleet is not a bonus");
        assert!((observed((0, 0), fleet) - 0.5 / (901.0 / 1002.0)).abs() < 1e-9, "a new node starts near the fleet");
        assert_eq!(observed((0, 500), fleet), shared::jobs::OBSERVED_MIN, "never below the floor");
        // A liar: claims ten times the speed, fails half its jobs.
        let mut liar = node("liar", 10.0);
        liar.observed = observed((50, 50), fleet);
        let honest = node("honest", 2.0);
        let nodes = [liar, honest];
        let (best, cands) = pick(&onnx(), &nodes);
        assert!(cands[0].effective < 10.0);
        assert_eq!(best.map(|i| nodes[i].id.as_str()), Some("liar"), "ten times the claim still outweighs half the success");
        let mut worse = nodes.clone();
        worse[0].observed = observed((5, 95), fleet);
        assert_eq!(pick(&onnx(), &worse).0.map(|i| worse[i].id.as_str()), Some("honest"));
    }
}
