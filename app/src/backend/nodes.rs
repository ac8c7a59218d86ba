//! Nodes in the database: adding them with a one-time token, redeeming the token, their
//! status transitions and metrics.
//!
//! Node keys are never stored: a node's key is `HMAC-SHA256(server secret, node id)`, so the
//! server can check any node's messages from the id alone, and a copy of the database holds no
//! credentials. Revoking a node marks it removed; its key stops being accepted.

use sha2::{Digest, Sha256};
use shared::score::Score;
use shared::wire::{NodeFacts, NodeMetrics};
use sqlx::FromRow;

use super::{now_ms, AppState, Db};
use crate::nodes::{NewNode, NodeView};

/// How long a registration token stays valid.
pub const TOKEN_TTL_MS: i64 = 30 * 60 * 1000;

/// Derives node keys from the server's secret.
#[derive(Clone)]
pub struct NodeKeys {
    secret: Vec<u8>,
}

impl std::fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKeys(<redacted>)")
    }
}

impl NodeKeys {
    pub fn new(secret: Vec<u8>) -> Self {
        Self { secret }
    }

    /// The key node `node_id` signs its messages with.
    pub fn key_for(&self, node_id: &str) -> String {
        let secret = hex::encode(&self.secret);
        shared::wire::sign(&secret, format!("node-key:{node_id}").as_bytes())
    }
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("aiedge_reg_{}", hex::encode(bytes))
}

#[derive(FromRow)]
struct NodeRow {
    id: String,
    name: String,
    owner_email: String,
    status: String,
    admin_state: String,
    facts: Option<String>,
    metrics: Option<String>,
    score: Option<f64>,
    last_heartbeat_at: Option<i64>,
    created_at: i64,
    recent_failures: i64,
}

impl NodeRow {
    fn view(self, policy: &shared::score::ThermalPolicy) -> NodeView {
        let metrics: Option<NodeMetrics> = self.metrics.as_deref().and_then(|m| serde_json::from_str(m).ok());
        let score: Option<Score> = metrics.as_ref().map(|m| shared::score::score(m, policy));
        let _ = self.score;
        NodeView {
            id: self.id,
            name: self.name,
            owner_email: self.owner_email,
            status: self.status,
            admin_state: self.admin_state,
            facts: self.facts.as_deref().and_then(|f| serde_json::from_str(f).ok()),
            metrics,
            score,
            last_heartbeat_ms: self.last_heartbeat_at,
            created_at_ms: self.created_at,
            recent_failures: u32::try_from(self.recent_failures).unwrap_or(0),
        }
    }
}

/// How far back a node's failed and lost attempts are counted.
pub const RECENT_FAILURES_MS: i64 = 24 * 3600 * 1000;

/// The node query, with the failures of the last [`RECENT_FAILURES_MS`] (the window's start is
/// a number, inlined).
fn select() -> String {
    let since = now_ms() - RECENT_FAILURES_MS;
    format!(
        "select n.id, n.name, u.email as owner_email, n.status, n.admin_state, n.facts, n.metrics,
         n.score, n.last_heartbeat_at, n.created_at,
         (select count(*) from job_attempts a where a.node_id = n.id and a.outcome in ('failed', 'lost') and a.finished_at >= {since}) as recent_failures
         from nodes n join users u on u.id = n.owner_id"
    )
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("a node with this name exists")]
    NameTaken,
    #[error("{0}")]
    Internal(String),
}

/// Adds a node in the `waiting` state and issues its one-time token.
pub async fn add(state: &AppState, owner_id: &str, name: &str) -> Result<NewNode, AddError> {
    let id = uuid::Uuid::new_v4().to_string();
    let now = now_ms();
    let token = new_token();
    let expires_at_ms = now + TOKEN_TTL_MS;
    let internal = |e: sqlx::Error| AddError::Internal(e.to_string());
    let mut tx = state.db.pool.begin().await.map_err(internal)?;
    let inserted = sqlx::query("insert into nodes (id, owner_id, name, created_at) values ($1, $2, $3, $4)")
        .bind(&id)
        .bind(owner_id)
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await;
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(AddError::NameTaken),
        other => other.map_err(internal)?,
    };
    sqlx::query("insert into node_tokens (token_hash, node_id, expires_at) values ($1, $2, $3)")
        .bind(token_hash(&token))
        .bind(&id)
        .bind(expires_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
    tx.commit().await.map_err(internal)?;
    let node = get(&state.db, &id, &state.settings.thermal).await.map_err(internal)?.ok_or_else(|| AddError::Internal("node vanished".into()))?;
    let command = format!(
        "node-agent run --server {} --token {token} --name '{}'",
        state.settings.public_url,
        name.replace('\'', r"'\''")
    );
    tracing::info!(node_id = %id, owner_id, "node added");
    Ok(NewNode { node, token, expires_at_ms, command })
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RedeemError {
    #[error("unknown registration token")]
    Unknown,
    #[error("registration token expired")]
    Expired,
    #[error("registration token already used")]
    Used,
    #[error("node removed")]
    Removed,
    #[error("{0}")]
    Internal(String),
}

/// Exchanges a one-time token for its node's id, exactly once, and records the node's facts.
pub async fn redeem(db: &Db, token: &str, facts: &NodeFacts) -> Result<String, RedeemError> {
    let internal = |e: sqlx::Error| RedeemError::Internal(e.to_string());
    let hash = token_hash(token);
    let now = now_ms();
    let row: Option<(String, i64, Option<i64>)> =
        sqlx::query_as("select node_id, expires_at, used_at from node_tokens where token_hash = $1")
            .bind(&hash)
            .fetch_optional(&db.pool)
            .await
            .map_err(internal)?;
    let (node_id, expires_at, used_at) = row.ok_or(RedeemError::Unknown)?;
    if used_at.is_some() {
        return Err(RedeemError::Used);
    }
    if expires_at <= now {
        return Err(RedeemError::Expired);
    }
    // The `used_at is null` condition makes two racing redemptions produce one winner.
    let done = sqlx::query("update node_tokens set used_at = $1 where token_hash = $2 and used_at is null")
        .bind(now)
        .bind(&hash)
        .execute(&db.pool)
        .await
        .map_err(internal)?;
    if done.rows_affected() != 1 {
        return Err(RedeemError::Used);
    }
    let admin_state: Option<(String,)> = sqlx::query_as("select admin_state from nodes where id = $1")
        .bind(&node_id)
        .fetch_optional(&db.pool)
        .await
        .map_err(internal)?;
    if admin_state.is_none_or(|(s,)| s == "removed") {
        return Err(RedeemError::Removed);
    }
    sqlx::query("update nodes set facts = $1 where id = $2")
        .bind(serde_json::to_string(facts).unwrap_or_default())
        .bind(&node_id)
        .execute(&db.pool)
        .await
        .map_err(internal)?;
    Ok(node_id)
}

pub async fn get(db: &Db, id: &str, policy: &shared::score::ThermalPolicy) -> Result<Option<NodeView>, sqlx::Error> {
    let row = sqlx::query_as::<_, NodeRow>(&format!("{} where n.id = $1", select()))
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.map(|r| r.view(policy)))
}

/// Nodes of one owner, or all of them; removed nodes are left out. Scores (with their factors)
/// are computed under `policy`, the server's configured temperatures.
pub async fn list(db: &Db, owner_id: Option<&str>, policy: &shared::score::ThermalPolicy) -> Result<Vec<NodeView>, sqlx::Error> {
    let rows = match owner_id {
        Some(owner) => {
            sqlx::query_as::<_, NodeRow>(&format!("{} where n.owner_id = $1 and n.admin_state <> 'removed' order by n.name", select()))
                .bind(owner)
                .fetch_all(&db.pool)
                .await?
        }
        None => {
            sqlx::query_as::<_, NodeRow>(&format!("{} where n.admin_state <> 'removed' order by u.email, n.name", select()))
                .fetch_all(&db.pool)
                .await?
        }
    };
    Ok(rows.into_iter().map(|r| r.view(policy)).collect())
}

/// What the heartbeat path needs to know of a node to trust its messages.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeAuth {
    pub status: String,
    pub admin_state: String,
}

pub async fn auth_info(db: &Db, id: &str) -> Result<Option<NodeAuth>, sqlx::Error> {
    let row: Option<(String, String)> = sqlx::query_as("select status, admin_state from nodes where id = $1")
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.map(|(status, admin_state)| NodeAuth { status, admin_state }))
}

/// Records a status transition with its reason, unless the node is no longer in `from`.
pub async fn transition(db: &Db, id: &str, from: &str, to: &str, reason: &str, at: i64) -> Result<bool, sqlx::Error> {
    let mut tx = db.pool.begin().await?;
    let done = sqlx::query("update nodes set status = $1 where id = $2 and status = $3")
        .bind(to)
        .bind(id)
        .bind(from)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 1 {
        sqlx::query("insert into node_events (id, node_id, at, from_status, to_status, reason) values ($1, $2, $3, $4, $5, $6)")
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(id)
            .bind(at)
            .bind(from)
            .bind(to)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// The latest state of one node, as the heartbeat path flushes it.
pub struct Latest {
    pub node_id: String,
    pub at: i64,
    pub metrics: NodeMetrics,
    pub facts: Option<NodeFacts>,
    pub score: Score,
}

/// Writes the latest metrics of many nodes and appends one history sample each, in one
/// transaction: one commit per flush instead of one per heartbeat.
pub async fn save_latest(db: &Db, batch: &[Latest]) -> Result<(), sqlx::Error> {
    let mut tx = db.pool.begin().await?;
    for l in batch {
        let metrics = serde_json::to_string(&l.metrics).unwrap_or_default();
        sqlx::query("update nodes set metrics = $1, score = $2, last_heartbeat_at = $3 where id = $4")
            .bind(&metrics)
            .bind(l.score.total)
            .bind(l.at)
            .bind(&l.node_id)
            .execute(&mut *tx)
            .await?;
        if let Some(facts) = &l.facts {
            sqlx::query("update nodes set facts = $1 where id = $2")
                .bind(serde_json::to_string(facts).unwrap_or_default())
                .bind(&l.node_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            r#"insert into node_samples (node_id, at, free_cpu_pct, free_mem_pct, free_ram_gib, events_per_sec, temperature_c, score)
               values ($1, $2, $3, $4, $5, $6, $7, $8)"#,
        )
        .bind(&l.node_id)
        .bind(l.at)
        .bind(l.metrics.free_cpu_pct)
        .bind(l.metrics.free_mem_pct)
        .bind(l.metrics.free_ram_gib)
        .bind(l.metrics.events_per_sec)
        .bind(l.metrics.temperature_c)
        .bind(l.score.total)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Records the agent process now heartbeating for a node (it changes when the agent restarts).
pub async fn set_agent_instance(db: &Db, id: &str, instance: &str) -> Result<(), sqlx::Error> {
    sqlx::query("update nodes set agent_instance = $1 where id = $2").bind(instance).bind(id).execute(&db.pool).await?;
    Ok(())
}

/// Drops history older than `keep_ms`.
pub async fn prune_samples(db: &Db, keep_ms: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("delete from node_samples where at < $1").bind(now_ms() - keep_ms).execute(&db.pool).await?;
    Ok(done.rows_affected())
}

/// Sets a node's admin state; removal is final. Returns false when the node does not exist or
/// was removed already.
pub async fn set_admin_state(db: &Db, id: &str, state: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("update nodes set admin_state = $1 where id = $2 and admin_state <> 'removed'")
        .bind(state)
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The last `window_ms` of samples per node (of one owner, or all), thinned to `max_points`.
pub async fn history(
    db: &Db,
    owner_id: Option<&str>,
    window_ms: i64,
    max_points: usize,
) -> Result<std::collections::HashMap<String, Vec<crate::live::Sample>>, sqlx::Error> {
    let since = now_ms() - window_ms;
    let sql = r#"select s.node_id, s.at, s.free_cpu_pct, s.free_mem_pct, s.temperature_c, s.score
        from node_samples s join nodes n on n.id = s.node_id
        where s.at >= $1 and ($2 = '' or n.owner_id = $2) and n.admin_state <> 'removed'
        order by s.node_id, s.at"#;
    let rows: Vec<(String, i64, f64, f64, Option<f64>, f64)> =
        sqlx::query_as(sql).bind(since).bind(owner_id.unwrap_or("")).fetch_all(&db.pool).await?;
    let mut out: std::collections::HashMap<String, Vec<crate::live::Sample>> = Default::default();
    for (node_id, at_ms, free_cpu_pct, free_mem_pct, temperature_c, score) in rows {
        out.entry(node_id).or_default().push(crate::live::Sample { at_ms, free_cpu_pct, free_mem_pct, temperature_c, score });
    }
    for points in out.values_mut() {
        if points.len() > max_points {
            let step = points.len().div_ceil(max_points);
            *points = points.iter().step_by(step).copied().collect();
        }
    }
    Ok(out)
}
