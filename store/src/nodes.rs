//! Nodes in the database: adding them with a one-time token, redeeming the token, their
//! status transitions and metrics.
//!
//! History is bounded: `node_samples` holds every flushed sample for [`FULL_RATE_MS`], then
//! [`roll_up`] moves whole minutes into `node_samples_minute` (averages per node per minute),
//! kept for [`MINUTE_RETENTION_MS`]. [`history`] reads both and thins them to the points a
//! chart draws.
//!
//! Node keys are never stored: a node's key is `HMAC-SHA256(server secret, node id)`, so the
//! server can check any node's messages from the id alone, and a copy of the database holds no
//! credentials. Revoking a node marks it removed; its key stops being accepted.

use sha2::{Digest, Sha256};
use shared::score::Score;
use shared::wire::{NodeFacts, NodeMetrics};
use sqlx::FromRow;

use aiedge_core::views::{NewNode, NodeDetail, NodeEvent, NodeView, Sample, UserView};
use aiedge_core::{AdminState, NodeStatus, Sharing};
use shared::score::ThermalPolicy;

use super::db::Backend;
use super::leases::{self, Fence};
use super::{now_ms, Db};

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
    sharing: String,
    facts: Option<String>,
    metrics: Option<String>,
    score: Option<f64>,
    last_heartbeat_at: Option<i64>,
    created_at: i64,
    recent_failures: i64,
}

impl NodeRow {
    fn view(self, policy: &shared::score::ThermalPolicy) -> Result<NodeView, sqlx::Error> {
        let metrics: Option<NodeMetrics> = self.metrics.as_deref().and_then(|m| serde_json::from_str(m).ok());
        let score: Option<Score> = metrics.as_ref().map(|m| shared::score::score(m, policy));
        let _ = self.score;
        Ok(NodeView {
            id: self.id,
            name: self.name,
            owner_email: self.owner_email,
            status: super::state(&self.status)?,
            admin_state: super::state(&self.admin_state)?,
            sharing: super::state(&self.sharing)?,
            facts: self.facts.as_deref().and_then(|f| serde_json::from_str(f).ok()),
            metrics,
            score,
            last_heartbeat_ms: self.last_heartbeat_at,
            created_at_ms: self.created_at,
            recent_failures: u32::try_from(self.recent_failures).unwrap_or(0),
        })
    }
}

/// How far back a node's failed and lost attempts are counted.
pub const RECENT_FAILURES_MS: i64 = 24 * 3600 * 1000;

/// The node query, with the failures of the last [`RECENT_FAILURES_MS`] (the window's start is
/// a number, inlined).
fn select() -> String {
    let since = now_ms() - RECENT_FAILURES_MS;
    format!(
        "select n.id, n.name, u.email as owner_email, n.status, n.admin_state, n.sharing, n.facts, n.metrics,
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
/// `public_url`: where the agent reaches the server, for the command shown to the owner.
pub async fn add(db: &Db, thermal: &ThermalPolicy, public_url: &str, owner_id: &str, name: &str) -> Result<NewNode, AddError> {
    let id = uuid::Uuid::new_v4().to_string();
    let now = now_ms();
    let token = new_token();
    let expires_at_ms = now + TOKEN_TTL_MS;
    let internal = |e: sqlx::Error| AddError::Internal(e.to_string());
    let mut tx = db.writer.begin().await.map_err(internal)?;
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
    let node = get(db, &id, thermal).await.map_err(internal)?.ok_or_else(|| AddError::Internal("node vanished".into()))?;
    tracing::info!(node_id = %id, owner_id, "node added");
    Ok(NewNode::new(node, token, expires_at_ms, public_url))
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
        .execute(&db.writer)
        .await
        .map_err(internal)?;
    if done.rows_affected() != 1 {
        return Err(RedeemError::Used);
    }
    let admin_state: Option<(String,)> =
        sqlx::query_as("select admin_state from nodes where id = $1").bind(&node_id).fetch_optional(&db.pool).await.map_err(internal)?;
    if admin_state.is_none_or(|(s,)| s == AdminState::Removed.as_str()) {
        return Err(RedeemError::Removed);
    }
    sqlx::query("update nodes set facts = $1 where id = $2")
        .bind(serde_json::to_string(facts).unwrap_or_default())
        .bind(&node_id)
        .execute(&db.writer)
        .await
        .map_err(internal)?;
    Ok(node_id)
}

pub async fn get(db: &Db, id: &str, policy: &shared::score::ThermalPolicy) -> Result<Option<NodeView>, sqlx::Error> {
    let row = sqlx::query_as::<_, NodeRow>(&format!("{} where n.id = $1", select())).bind(id).fetch_optional(&db.pool).await?;
    row.map(|r| r.view(policy)).transpose()
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
    rows.into_iter().map(|r| r.view(policy)).collect()
}

/// Nodes whose heartbeats arrive (active or stopping), with their agent process: the heartbeat
/// path watches them from start-up, so one that died while the server was down is noticed.
pub async fn heard(db: &Db) -> Result<Vec<Heard>, sqlx::Error> {
    let rows: Vec<(String, String, Option<String>, Option<i64>)> =
        sqlx::query_as("select id, status, agent_instance, last_sent_at from nodes where status in ('active', 'stopping')")
            .fetch_all(&db.pool)
            .await?;
    rows.into_iter()
        .map(|(id, status, instance, last_sent_at)| Ok(Heard { id, status: super::state(&status)?, instance, last_sent_at }))
        .collect()
}

/// A node the heartbeat path watches, as the database last knew it.
pub struct Heard {
    pub id: String,
    pub status: NodeStatus,
    /// The agent process heard last.
    pub instance: Option<String>,
    /// The sender's clock on the latest heartbeat accepted.
    pub last_sent_at: Option<i64>,
}

/// An active node as the dispatcher reads it each round, with the jobs it holds.
pub struct FleetRow {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub sharing: Sharing,
    /// The users it is shared with, when `sharing` is [`Sharing::Users`].
    pub shared_with: Vec<String>,
    pub status: NodeStatus,
    pub admin_state: AdminState,
    pub score: Option<f64>,
    pub facts: Option<String>,
    pub metrics: Option<String>,
    /// Jobs dispatched to or running on the node.
    pub in_flight: i64,
    /// When the oldest of them was dispatched.
    pub oldest_in_flight: Option<i64>,
}

/// The active, not removed nodes and their jobs in flight, by id: one grouped join (and one more
/// query for the users nodes are shared with, when some node names any).
pub async fn fleet(db: &Db) -> Result<Vec<FleetRow>, sqlx::Error> {
    type Row = (String, String, String, String, String, String, Option<f64>, Option<String>, Option<String>, i64, Option<i64>);
    let rows: Vec<Row> = sqlx::query_as(
        "select n.id, n.name, n.owner_id, n.sharing, n.status, n.admin_state, n.score, n.facts, n.metrics,
                coalesce(f.in_flight, 0) as in_flight, f.oldest_in_flight
         from nodes n
         left join (select node_id, count(*) as in_flight, min(dispatched_at) as oldest_in_flight from jobs
                    where status in ('dispatched', 'running') group by node_id) f on f.node_id = n.id
         where n.status = 'active' and n.admin_state <> 'removed' order by n.id",
    )
    .fetch_all(&db.pool)
    .await?;
    let mut fleet = rows
        .into_iter()
        .map(|(id, name, owner_id, sharing, status, admin_state, score, facts, metrics, in_flight, oldest_in_flight)| {
            Ok(FleetRow {
                id,
                name,
                owner_id,
                sharing: super::state(&sharing)?,
                shared_with: Vec::new(),
                status: super::state(&status)?,
                admin_state: super::state(&admin_state)?,
                score,
                facts,
                metrics,
                in_flight,
                oldest_in_flight,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    if fleet.iter().any(|n| n.sharing == Sharing::Users) {
        let shares: Vec<(String, String)> = sqlx::query_as(
            "select s.node_id, s.user_id from node_shares s join nodes n on n.id = s.node_id
             where n.sharing = 'users' and n.status = 'active' and n.admin_state <> 'removed'",
        )
        .fetch_all(&db.pool)
        .await?;
        for (node_id, user_id) in shares {
            if let Some(node) = fleet.iter_mut().find(|n| n.id == node_id) {
                node.shared_with.push(user_id);
            }
        }
    }
    Ok(fleet)
}

/// Whose jobs the node runs besides its owner's: `users` names them (their ids) when `sharing`
/// is [`Sharing::Users`], and is ignored otherwise. One transaction; false for no such node.
pub async fn set_sharing(db: &Db, id: &str, sharing: Sharing, users: &[String]) -> Result<bool, sqlx::Error> {
    let mut tx = db.writer.begin().await?;
    let done = sqlx::query("update nodes set sharing = $1 where id = $2 and admin_state <> 'removed'")
        .bind(sharing.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("delete from node_shares where node_id = $1").bind(id).execute(&mut *tx).await?;
    if sharing == Sharing::Users {
        for user in users {
            sqlx::query("insert into node_shares (node_id, user_id) values ($1, $2) on conflict do nothing")
                .bind(id)
                .bind(user)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// Who owns the node, unless it is missing or removed.
pub async fn owner_of(db: &Db, id: &str) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> =
        sqlx::query_as("select owner_id from nodes where id = $1 and admin_state <> 'removed'").bind(id).fetch_optional(&db.pool).await?;
    Ok(row.map(|(owner,)| owner))
}

/// The e-mail addresses of the users a node is shared with by name, sorted.
pub async fn shared_with(db: &Db, id: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> =
        sqlx::query_as("select u.email from node_shares s join users u on u.id = s.user_id where s.node_id = $1 order by u.email")
            .bind(id)
            .fetch_all(&db.pool)
            .await?;
    Ok(rows.into_iter().map(|(e,)| e).collect())
}

/// What the server saw of each node's attempts that ended since `since_ms`: (node id,
/// succeeded, failed or lost). Cancelled attempts say nothing about the node.
pub async fn track_records(db: &Db, since_ms: i64) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select node_id,
                sum(case when outcome = 'succeeded' then 1 else 0 end),
                sum(case when outcome in ('failed', 'lost') then 1 else 0 end)
         from job_attempts where finished_at >= $1 and node_id is not null group by node_id",
    )
    .bind(since_ms)
    .fetch_all(&db.pool)
    .await
}

/// What the heartbeat path needs to know of a node to trust its messages.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeAuth {
    pub status: NodeStatus,
    pub admin_state: AdminState,
    /// The sender's clock on the latest heartbeat accepted.
    pub last_sent_at: Option<i64>,
}

pub async fn auth_info(db: &Db, id: &str) -> Result<Option<NodeAuth>, sqlx::Error> {
    let row: Option<(String, String, Option<i64>)> =
        sqlx::query_as("select status, admin_state, last_sent_at from nodes where id = $1").bind(id).fetch_optional(&db.pool).await?;
    row.map(|(status, admin_state, last_sent_at)| {
        Ok(NodeAuth { status: super::state(&status)?, admin_state: super::state(&admin_state)?, last_sent_at })
    })
    .transpose()
}

/// Records a status transition with its reason, unless the node is no longer in `from`.
/// Fenced (see [`crate::leases`]): only the lease holder decides that a node died or came back.
pub async fn transition(
    db: &Db,
    fence: Option<&Fence>,
    id: &str,
    from: NodeStatus,
    to: NodeStatus,
    reason: &str,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.writer.begin().await?;
    leases::hold(&mut tx, fence).await?;
    let done = sqlx::query("update nodes set status = $1 where id = $2 and status = $3")
        .bind(to.as_str())
        .bind(id)
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 1 {
        sqlx::query("insert into node_events (id, node_id, at, from_status, to_status, reason) values ($1, $2, $3, $4, $5, $6)")
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(id)
            .bind(at)
            .bind(from.as_str())
            .bind(to.as_str())
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
    /// The sender's clock on it.
    pub sent_at: i64,
    pub metrics: NodeMetrics,
    pub facts: Option<NodeFacts>,
    pub score: Score,
}

/// Writes the latest metrics of many nodes and appends one history sample each, in one
/// transaction: one commit per flush instead of one per heartbeat. Fenced like [`transition`].
pub async fn save_latest(db: &Db, fence: Option<&Fence>, batch: &[Latest]) -> Result<(), sqlx::Error> {
    let mut tx = db.writer.begin().await?;
    leases::hold(&mut tx, fence).await?;
    for l in batch {
        let metrics = serde_json::to_string(&l.metrics).unwrap_or_default();
        let updated = sqlx::query("update nodes set metrics = $1, score = $2, last_heartbeat_at = $3, last_sent_at = $4 where id = $5")
            .bind(&metrics)
            .bind(l.score.total)
            .bind(l.at)
            .bind(l.sent_at)
            .bind(&l.node_id)
            .execute(&mut *tx)
            .await?;
        // A node deleted with its account since its heartbeat was accepted: its sample would
        // break the foreign key and with it the whole batch, every other node's too.
        if updated.rows_affected() == 0 {
            continue;
        }
        if let Some(facts) = &l.facts {
            sqlx::query("update nodes set facts = $1 where id = $2")
                .bind(serde_json::to_string(facts).unwrap_or_default())
                .bind(&l.node_id)
                .execute(&mut *tx)
                .await?;
        }
        // IMPORTANT: an unknown temperature is a `null` in the SQL, never a bound `None`. sqlx's
        // `any` driver (0.8.6) sends a `None` f64 to PostgreSQL as a float4 null, the connection
        // caches the statement with that type, and the next known temperature on it fails with
        // "incorrect binary data format".
        let sql = if l.metrics.temperature_c.is_some() {
            r#"insert into node_samples (node_id, at, free_cpu_pct, free_mem_pct, free_ram_gib, events_per_sec, score, temperature_c)
               values ($1, $2, $3, $4, $5, $6, $7, $8)"#
        } else {
            r#"insert into node_samples (node_id, at, free_cpu_pct, free_mem_pct, free_ram_gib, events_per_sec, score, temperature_c)
               values ($1, $2, $3, $4, $5, $6, $7, null)"#
        };
        let mut insert = sqlx::query(sql)
            .bind(&l.node_id)
            .bind(l.at)
            .bind(l.metrics.free_cpu_pct)
            .bind(l.metrics.free_mem_pct)
            .bind(l.metrics.free_ram_gib)
            .bind(l.metrics.events_per_sec)
            .bind(l.score.total);
        if let Some(t) = l.metrics.temperature_c {
            insert = insert.bind(t);
        }
        insert.execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// Records the agent process now heartbeating for a node (it changes when the agent restarts).
pub async fn set_agent_instance(db: &Db, id: &str, instance: &str) -> Result<(), sqlx::Error> {
    sqlx::query("update nodes set agent_instance = $1 where id = $2").bind(instance).bind(id).execute(&db.writer).await?;
    Ok(())
}

/// Sets a node's admin state; removal is final. Returns false when the node does not exist or
/// was removed already.
pub async fn set_admin_state(db: &Db, id: &str, state: AdminState) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("update nodes set admin_state = $1 where id = $2 and admin_state <> 'removed'")
        .bind(state.as_str())
        .bind(id)
        .execute(&db.writer)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// How long history is kept at full rate (one sample per node per flush) before [`roll_up`]
/// averages it into minutes.
pub const FULL_RATE_MS: i64 = 60 * 60 * 1000;
/// How long the per-minute history is kept.
pub const MINUTE_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;
const MINUTE_MS: i64 = 60_000;
/// The newest transitions a node's page lists.
pub const EVENTS_SHOWN: i64 = 50;

/// What one [`roll_up`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RollUp {
    /// Per-minute rows written (new, or merged with a late sample).
    pub minutes: u64,
    /// Full-rate samples moved into them.
    pub samples: u64,
    /// Per-minute rows dropped for age.
    pub pruned: u64,
}

/// Averages the full-rate samples of every whole minute that ended more than `full_rate_ms`
/// before `now` into one row per node and minute, deletes those samples, and drops minutes
/// older than `retention_ms`.
///
/// IMPORTANT: all in one transaction, so a crash leaves either the samples or their average,
/// never both (counted twice) or neither (lost). Running it again finds nothing left to move;
/// a sample that lands late in a rolled-up minute is merged in, weighted by sample counts.
pub async fn roll_up(db: &Db, now: i64, full_rate_ms: i64, retention_ms: i64) -> Result<RollUp, sqlx::Error> {
    // Only whole minutes: the one the cutoff falls in still gets samples at full rate.
    let cutoff = (now - full_rate_ms).div_euclid(MINUTE_MS) * MINUTE_MS;
    let mut tx = db.writer.begin().await?;
    if db.backend == Backend::Postgres {
        // Two servers rolling up at once would both average the same samples before either
        // deletes them; this lock makes the second wait, then find them gone. Readers are not
        // blocked. SQLite has a single writer already.
        sqlx::query("lock table node_samples_minute in share row exclusive mode").execute(&mut *tx).await?;
    }
    // `m` is the row already there, `excluded` the new average: merge them weighted by how
    // many samples each stands for (temperatures by how many had one).
    let minutes = sqlx::query(
        r#"insert into node_samples_minute as m
             (node_id, minute, samples, free_cpu_pct, free_mem_pct, free_ram_gib, events_per_sec, score, temperature_c, temperature_samples)
           select node_id, (at / 60000) * 60000, count(*), avg(free_cpu_pct), avg(free_mem_pct), avg(free_ram_gib),
                  avg(events_per_sec), avg(score), avg(temperature_c), count(temperature_c)
           from node_samples
           where at < $1
           group by node_id, (at / 60000) * 60000
           on conflict (node_id, minute) do update set
             samples = m.samples + excluded.samples,
             free_cpu_pct = (m.free_cpu_pct * m.samples + excluded.free_cpu_pct * excluded.samples) / (m.samples + excluded.samples),
             free_mem_pct = (m.free_mem_pct * m.samples + excluded.free_mem_pct * excluded.samples) / (m.samples + excluded.samples),
             free_ram_gib = (m.free_ram_gib * m.samples + excluded.free_ram_gib * excluded.samples) / (m.samples + excluded.samples),
             events_per_sec = (m.events_per_sec * m.samples + excluded.events_per_sec * excluded.samples) / (m.samples + excluded.samples),
             score = (m.score * m.samples + excluded.score * excluded.samples) / (m.samples + excluded.samples),
             temperature_c = case
               when excluded.temperature_samples = 0 then m.temperature_c
               when m.temperature_samples = 0 then excluded.temperature_c
               else (m.temperature_c * m.temperature_samples + excluded.temperature_c * excluded.temperature_samples)
                    / (m.temperature_samples + excluded.temperature_samples)
             end,
             temperature_samples = m.temperature_samples + excluded.temperature_samples"#,
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let samples = sqlx::query("delete from node_samples where at < $1").bind(cutoff).execute(&mut *tx).await?.rows_affected();
    let pruned =
        sqlx::query("delete from node_samples_minute where minute < $1").bind(now - retention_ms).execute(&mut *tx).await?.rows_affected();
    tx.commit().await?;
    Ok(RollUp { minutes, samples, pruned })
}

/// Whose history [`history`] reads.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// Every node that is not removed (the admin's resource view).
    All,
    /// One owner's nodes that are not removed ("My nodes").
    Owner(&'a str),
    /// One node, removed or not (its page).
    Node(&'a str),
}

/// A history point before thinning: a full-rate sample (weight 1) or a minute's average
/// (weight = its sample count).
struct Point {
    at: i64,
    weight: f64,
    free_cpu_pct: f64,
    free_mem_pct: f64,
    score: f64,
    temperature_c: Option<f64>,
    temperature_weight: f64,
}

/// The `window_ms` before `now` of each node's history in `scope`: per-minute averages for the
/// part older than [`FULL_RATE_MS`], full-rate samples after, averaged into at most
/// `max_points` equal spans of time so a day draws as evenly as ten minutes.
pub async fn history(
    db: &Db,
    scope: Scope<'_>,
    now: i64,
    window_ms: i64,
    max_points: usize,
) -> Result<std::collections::HashMap<String, Vec<Sample>>, sqlx::Error> {
    let since = now - window_ms;
    let (filter, arg) = match scope {
        Scope::All => ("n.admin_state <> 'removed'", None),
        Scope::Owner(owner) => ("n.owner_id = $2 and n.admin_state <> 'removed'", Some(owner)),
        Scope::Node(id) => ("n.id = $2", Some(id)),
    };
    let mut points: std::collections::HashMap<String, Vec<Point>> = Default::default();

    let sql = format!(
        "select s.node_id, s.at, s.free_cpu_pct, s.free_mem_pct, s.temperature_c, s.score
         from node_samples s join nodes n on n.id = s.node_id where s.at >= $1 and {filter}"
    );
    let mut query = sqlx::query_as::<_, (String, i64, f64, f64, Option<f64>, f64)>(&sql).bind(since);
    if let Some(arg) = arg {
        query = query.bind(arg);
    }
    for (node_id, at, free_cpu_pct, free_mem_pct, temperature_c, score) in query.fetch_all(&db.pool).await? {
        let temperature_weight = if temperature_c.is_some() { 1.0 } else { 0.0 };
        points.entry(node_id).or_default().push(Point {
            at,
            weight: 1.0,
            free_cpu_pct,
            free_mem_pct,
            score,
            temperature_c,
            temperature_weight,
        });
    }

    // Minutes exist only for history older than the full-rate hour; short windows skip the query.
    if window_ms > FULL_RATE_MS {
        let sql = format!(
            "select s.node_id, s.minute, s.samples, s.free_cpu_pct, s.free_mem_pct, s.temperature_c, s.temperature_samples, s.score
             from node_samples_minute s join nodes n on n.id = s.node_id where s.minute >= $1 and {filter}"
        );
        let mut query = sqlx::query_as::<_, (String, i64, i64, f64, f64, Option<f64>, i64, f64)>(&sql).bind(since);
        if let Some(arg) = arg {
            query = query.bind(arg);
        }
        for (node_id, at, samples, free_cpu_pct, free_mem_pct, temperature_c, temperature_samples, score) in
            query.fetch_all(&db.pool).await?
        {
            points.entry(node_id).or_default().push(Point {
                at,
                weight: samples as f64,
                free_cpu_pct,
                free_mem_pct,
                score,
                temperature_c,
                temperature_weight: temperature_samples as f64,
            });
        }
    }

    let span = (window_ms / max_points.max(1) as i64).max(1);
    Ok(points
        .into_iter()
        .map(|(id, mut p)| {
            p.sort_by_key(|p| p.at);
            (id, thin(&p, since, span))
        })
        .collect())
}

/// Averages time-sorted `points` over spans of `span` ms from `since`, weighted by how many
/// samples each stands for; each average is dated by its newest point.
fn thin(points: &[Point], since: i64, span: i64) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < points.len() {
        let bucket = (points[i].at - since).div_euclid(span);
        let mut j = i;
        let (mut w, mut cpu, mut mem, mut score, mut tw, mut temp) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        while j < points.len() && (points[j].at - since).div_euclid(span) == bucket {
            let p = &points[j];
            w += p.weight;
            cpu += p.free_cpu_pct * p.weight;
            mem += p.free_mem_pct * p.weight;
            score += p.score * p.weight;
            if let Some(t) = p.temperature_c {
                tw += p.temperature_weight;
                temp += t * p.temperature_weight;
            }
            j += 1;
        }
        if w > 0.0 {
            out.push(Sample {
                at_ms: points[j - 1].at,
                free_cpu_pct: cpu / w,
                free_mem_pct: mem / w,
                temperature_c: (tw > 0.0).then(|| temp / tw),
                score: score / w,
            });
        }
        i = j;
    }
    out
}

/// A node's page for `viewer`: `None` when the node does not exist or belongs to someone else
/// and the viewer is not an admin (the two look the same).
pub async fn detail(
    db: &Db,
    thermal: &ThermalPolicy,
    id: &str,
    viewer: &UserView,
    window_ms: i64,
) -> Result<Option<NodeDetail>, sqlx::Error> {
    let owner: Option<(String,)> = sqlx::query_as("select owner_id from nodes where id = $1").bind(id).fetch_optional(&db.pool).await?;
    let Some((owner_id,)) = owner else { return Ok(None) };
    if !aiedge_core::may_manage(viewer, &owner_id) {
        return Ok(None);
    }
    let Some(node) = get(db, id, thermal).await? else { return Ok(None) };
    let events: Vec<(i64, String, String, String)> =
        sqlx::query_as("select at, from_status, to_status, reason from node_events where node_id = $1 order by at desc, id desc limit $2")
            .bind(id)
            .bind(EVENTS_SHOWN)
            .fetch_all(&db.pool)
            .await?;
    let (events_total,): (i64,) =
        sqlx::query_as("select count(*) from node_events where node_id = $1").bind(id).fetch_one(&db.pool).await?;
    let mut history = history(db, Scope::Node(id), now_ms(), window_ms, aiedge_core::views::HISTORY_POINTS).await?;
    let shared_with = if node.sharing == Sharing::Users { shared_with(db, id).await? } else { Vec::new() };
    Ok(Some(NodeDetail {
        mine: owner_id == viewer.id,
        node,
        shared_with,
        events: events
            .into_iter()
            .map(|(at_ms, from_status, to_status, reason)| {
                Ok(NodeEvent { at_ms, from_status: super::state(&from_status)?, to_status: super::state(&to_status)?, reason })
            })
            .collect::<Result<_, sqlx::Error>>()?,
        events_total: u64::try_from(events_total).unwrap_or(0),
        history: history.remove(id).unwrap_or_default(),
        window_ms,
    }))
}

/// How many nodes (not removed) are in each status, every status listed, for the metrics.
pub async fn count_by_status(db: &Db) -> Result<Vec<(&'static str, i64)>, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("select status, count(*) from nodes where admin_state <> 'removed' group by status").fetch_all(&db.pool).await?;
    Ok(aiedge_core::NodeStatus::ALL
        .iter()
        .map(|s| (s.as_str(), rows.iter().find(|(word, _)| word == s.as_str()).map_or(0, |(_, n)| *n)))
        .collect())
}
