//! Which replica does the work that must happen once: dispatch, the dead-node sweep and the
//! heartbeat intake, roll-ups, schedules. Every server process serves pages, the API and
//! agents; the one holding the [`leases::PRIMARY`] lease also runs those tasks, each with a
//! [`Fence`] of its term (see [`aiedge_store::leases`]).
//!
//! - The holder renews every [`RENEW_EVERY`]. If it cannot for [`GIVE_UP_AFTER`] (database
//!   away, process stalled), it stops its tasks on its own, before anyone may take over.
//! - A standby reads the lease every [`RENEW_EVERY`] and takes it over when it has seen neither
//!   term nor beat move for [`LEASE_TIME`] by its own clock, or at once when the holder let it
//!   go (a graceful stop). A holder's death is noticed within about `LEASE_TIME + 2 ×
//!   RENEW_EVERY` (7 s).
//! - On SQLite the server holds the database's file lock ([`crate::sqlite_lock`]), so it is
//!   the only one and takes the lease at once.
//!
//! Each replica also reports itself in the `replicas` table every [`ANNOUNCE_EVERY`] (for
//! `server status`, and so it knows whether other replicas need to hear its events).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiedge_store::leases::{self, Fence, Replica};
use aiedge_store::{now_ms, Db};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the holder renews and a standby looks.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How long a standby waits, seeing no beat, before it takes over.
pub const LEASE_TIME: Duration = Duration::from_secs(5);
/// How long a holder that cannot renew keeps going before it stops its tasks: well inside
/// [`LEASE_TIME`], so it has stopped before a standby may start.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(3);
/// How often a replica reports itself.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);
/// A replica not heard from for this long is not counted as a peer.
const PEER_SILENCE_MS: i64 = 15_000;
/// A replica not heard from for this long is removed from the table.
const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

/// What this replica is to the lease right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Standby,
    Holder { term: i64 },
}

impl Role {
    pub fn is_holder(self) -> bool {
        matches!(self, Role::Holder { .. })
    }

    /// The fence of a holder's term.
    pub fn fence(self) -> Option<Fence> {
        match self {
            Role::Holder { term } => Some(Fence { name: leases::PRIMARY, term }),
            Role::Standby => None,
        }
    }
}

/// This replica's view of the lease; cheap to clone.
#[derive(Clone)]
pub struct Leadership {
    pub replica: Arc<Replica>,
    role: watch::Receiver<Role>,
    /// Other replicas heard from lately.
    peers: Arc<AtomicUsize>,
    /// The lease loop, which lets the lease go when the server stops.
    lease_task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Leadership {
    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    /// True while this replica holds the lease (for periodic work that checks before each run).
    pub fn is_holder(&self) -> bool {
        self.role().is_holder()
    }

    /// Waits (at most `within`) until the lease loop has ended after the server's cancel, so a
    /// successor started right after this process finds the lease released.
    pub async fn stopped(&self, within: Duration) {
        let task = self.lease_task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = tokio::time::timeout(within, task).await;
        }
    }

    /// Other replicas heard from within the last 15 s (as of the latest announcement).
    pub fn peers(&self) -> usize {
        self.peers.load(Ordering::Relaxed)
    }

    /// Runs `work` with its fence and a token for each term this replica holds, cancelling the
    /// token when the term ends or `cancel` fires.
    pub fn while_holding<F, Fut>(&self, cancel: CancellationToken, work: F)
    where
        F: Fn(Fence, CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut role = self.role.clone();
        tokio::spawn(async move {
            loop {
                let current = *role.borrow_and_update();
                if let Some(fence) = current.fence() {
                    let term = cancel.child_token();
                    tokio::spawn(work(fence, term.clone()));
                    // Until the role changes from this term.
                    loop {
                        tokio::select! {
                            changed = role.changed() => if changed.is_err() { term.cancel(); return },
                            _ = cancel.cancelled() => { term.cancel(); return }
                        }
                        if *role.borrow() != current {
                            break;
                        }
                    }
                    term.cancel();
                    continue;
                }
                tokio::select! {
                    changed = role.changed() => if changed.is_err() { return },
                    _ = cancel.cancelled() => return,
                }
            }
        });
    }
}

/// This process as `server status` shows it.
pub fn this_replica(address: &str) -> Replica {
    let now = now_ms();
    Replica {
        id: uuid::Uuid::new_v4().simple().to_string(),
        host: hostname(),
        pid: i64::from(std::process::id()),
        version: env!("CARGO_PKG_VERSION").to_string(),
        address: address.to_string(),
        started_at: now,
        seen_at: now,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Starts the lease loop and the announcements. `alone`: no other server can share this
/// database (SQLite's file lock is held), so the lease is taken at once.
/// `peers` is kept to the number of other replicas heard from lately.
pub fn spawn(db: Db, replica: Replica, alone: bool, peers: Arc<AtomicUsize>, cancel: CancellationToken) -> Leadership {
    let (tx, rx) = watch::channel(Role::Standby);
    let task = tokio::spawn(lease_loop(db.clone(), replica.id.clone(), alone, tx, cancel.clone()));
    let leadership = Leadership { replica: Arc::new(replica), role: rx, peers, lease_task: Arc::new(std::sync::Mutex::new(Some(task))) };
    tokio::spawn(announce_loop(db, leadership.clone(), cancel));
    leadership
}

async fn lease_loop(db: Db, me: String, alone: bool, role: watch::Sender<Role>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The holder's term and when it last renewed it.
    let mut holding: Option<(i64, Instant)> = None;
    // A standby's view: the (term, beat) it last saw change, and when by its clock.
    let mut seen: Option<((i64, i64), Instant)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => break,
        }
        if let Some((term, renewed)) = holding {
            match leases::renew(&db, leases::PRIMARY, &me, term, now_ms()).await {
                Ok(true) => holding = Some((term, Instant::now())),
                Ok(false) => {
                    tracing::warn!(term, "lease taken over by another replica; stopping the work that runs once");
                    holding = None;
                    role.send_replace(Role::Standby);
                }
                Err(e) if renewed.elapsed() >= GIVE_UP_AFTER => {
                    tracing::error!(term, error = %e, "cannot renew the lease; stopping the work that runs once");
                    holding = None;
                    role.send_replace(Role::Standby);
                }
                Err(e) => tracing::warn!(term, error = %e, "renewing the lease failed; retrying"),
            }
            continue;
        }
        let taken = match leases::read(&db, leases::PRIMARY).await {
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the lease");
                continue;
            }
            Ok(None) => leases::take(&db, leases::PRIMARY, &me, None, now_ms()).await,
            Ok(Some(lease)) => {
                let at = (lease.term, lease.beat);
                if seen.is_none_or(|(pair, _)| pair != at) {
                    seen = Some((at, Instant::now()));
                }
                let silent = seen.is_some_and(|(_, since)| since.elapsed() >= LEASE_TIME);
                if !(alone || lease.is_released() || silent) {
                    continue;
                }
                tracing::info!(previous = %lease.holder, term = lease.term, released = lease.is_released(), "taking over the lease");
                leases::take(&db, leases::PRIMARY, &me, Some(at), now_ms()).await
            }
        };
        match taken {
            Ok(Some(term)) => {
                tracing::info!(term, "holding the lease: running dispatch, the node sweep, roll-ups and schedules");
                holding = Some((term, Instant::now()));
                seen = None;
                role.send_replace(Role::Holder { term });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "taking the lease failed"),
        }
    }
    if let Some((term, _)) = holding {
        role.send_replace(Role::Standby);
        match leases::release(&db, leases::PRIMARY, &me, term).await {
            Ok(_) => tracing::info!(term, "lease released"),
            Err(e) => tracing::warn!(term, error = %e, "cannot release the lease; another replica takes it over after its time"),
        }
    }
}

async fn announce_loop(db: Db, leadership: Leadership, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut me = (*leadership.replica).clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => break,
        }
        let now = now_ms();
        me.seen_at = now;
        if let Err(e) = leases::announce(&db, &me).await {
            tracing::warn!(error = %e, "cannot report this replica");
            continue;
        }
        match leases::replicas(&db, now - PEER_SILENCE_MS).await {
            Ok(all) => leadership.peers.store(all.iter().filter(|r| r.id != me.id).count(), Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "cannot read the replicas"),
        }
        if leadership.is_holder() {
            let _ = leases::forget(&db, None, now - FORGET_AFTER_MS).await;
        }
    }
    let _ = leases::forget(&db, Some(&me.id), 0).await;
}
