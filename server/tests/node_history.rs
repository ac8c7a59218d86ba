//! Bounded node history on real SQLite and PostgreSQL: full-rate samples older than an hour
//! become one averaged row per node and minute, exactly once; week-old minutes go; and the
//! charts' query reads across both tables.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic

mod common;

use aiedge_store::nodes::{self, Latest, RollUp, Scope, FULL_RATE_MS, MINUTE_RETENTION_MS};
use aiedge_store::Db;
use common::{DbKind, TestDb};
use shared::score::Score;
use shared::wire::NodeMetrics;

on_both_databases!(
    samples_roll_up_into_minutes_once,
    history_spans_minutes_and_full_rate,
    concurrent_roll_ups_count_once,
    known_and_unknown_temperatures_are_saved_together,
);

/// A whole minute, so the cutoff below is easy to reason about.
const N: i64 = 1_800_000_000_000;
/// "Now": half a minute past N, so an hour ago falls mid-minute (N - 59.5 min).
const NOW: i64 = N + 30_000;
/// The roll-up's cutoff: the start of the minute an hour ago falls in.
const CUTOFF: i64 = N - 3_600_000;
/// Two whole minutes before the cutoff.
const M1: i64 = CUTOFF - 120_000;
const M2: i64 = CUTOFF - 60_000;

async fn seed_nodes(db: &Db) {
    for (id, email) in [("u1", "one@example.org"), ("u2", "two@example.org")] {
        sqlx::query("insert into users (id, email, name, password_hash, role, created_at) values ($1, $2, $1, 'x', 'user', 0)")
            .bind(id)
            .bind(email)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    for id in ["a", "b"] {
        sqlx::query("insert into nodes (id, owner_id, name, status, created_at) values ($1, 'u1', $1, 'active', 0)")
            .bind(id)
            .execute(&db.pool)
            .await
            .unwrap();
    }
}

/// A full-rate sample, written the way the server writes them: free memory is 100 − CPU, so
/// one number checks both averages.
async fn sample(db: &Db, node: &str, at: i64, cpu: f64, temp: Option<f64>, score: f64) {
    let metrics = NodeMetrics {
        free_cpu_pct: cpu,
        free_mem_pct: 100.0 - cpu,
        free_ram_gib: 1.5,
        events_per_sec: 1000.0,
        temperature_c: temp,
        running_jobs: 0,
    };
    let score = Score { load: 1.0, perf: 1.0, thermal: 1.0, total: score };
    nodes::save_latest(db, None, &[Latest { node_id: node.into(), at, sent_at: at, metrics, facts: None, score }]).await.unwrap();
}

type MinuteRow = (String, i64, i64, f64, f64, Option<f64>, i64, f64);

async fn minutes(db: &Db) -> Vec<MinuteRow> {
    sqlx::query_as(
        "select node_id, minute, samples, free_cpu_pct, free_mem_pct, temperature_c, temperature_samples, score
         from node_samples_minute order by node_id, minute",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn full_rate(db: &Db) -> Vec<(String, i64)> {
    sqlx::query_as("select node_id, at from node_samples order by node_id, at").fetch_all(&db.pool).await.unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Checks one minute row: node, minute, samples, free CPU average (memory is 100 − it),
/// temperature average and count, score average.
#[allow(clippy::too_many_arguments)]
fn check(row: &MinuteRow, node: &str, minute: i64, samples: i64, cpu: f64, temp: Option<f64>, temp_samples: i64, score: f64) {
    let ok = row.0 == node
        && row.1 == minute
        && row.2 == samples
        && close(row.3, cpu)
        && close(row.4, 100.0 - cpu)
        && match (row.5, temp) {
            (Some(a), Some(b)) => close(a, b),
            (None, None) => true,
            _ => false,
        }
        && row.6 == temp_samples
        && close(row.7, score);
    assert!(ok, "expected ({node}, {minute}, {samples}, {cpu}, {temp:?}, {temp_samples}, {score}), got {row:?}");
}

/// The samples every test starts from; see each line.
async fn seed_samples(db: &Db) {
    // Node a, minute M1: three samples, one without a temperature.
    sample(db, "a", M1 + 1_000, 10.0, Some(50.0), 1.0).await;
    sample(db, "a", M1 + 20_000, 20.0, None, 2.0).await;
    sample(db, "a", M1 + 59_999, 60.0, Some(70.0), 3.0).await;
    // Node a, minute M2: one sample, no temperature.
    sample(db, "a", M2 + 5_000, 40.0, None, 4.0).await;
    // Older than an hour, but its minute is not over: stays at full rate.
    sample(db, "a", CUTOFF, 90.0, Some(40.0), 5.0).await;
    // Recent: stays.
    sample(db, "a", NOW - 30 * 60_000, 80.0, None, 6.0).await;
    // Node b, minute M1.
    sample(db, "b", M1 + 2_000, 50.0, None, 1.0).await;
    sample(db, "b", M1 + 3_000, 70.0, None, 2.0).await;
    // Eight days old: rolled up and, being past the retention, dropped in the same run.
    sample(db, "a", NOW - 8 * 86_400_000, 1.0, None, 1.0).await;
}

async fn samples_roll_up_into_minutes_once(kind: DbKind) {
    let t = TestDb::new(kind).await;
    let db = &t.db;
    seed_nodes(db).await;
    seed_samples(db).await;
    // A minute row just past the retention, from an earlier run: dropped.
    sqlx::query(
        "insert into node_samples_minute (node_id, minute, samples, free_cpu_pct, free_mem_pct, free_ram_gib, events_per_sec, score, temperature_c, temperature_samples)
         values ('b', $1, 30, 1, 1, 1, 1, 1, null, 0)",
    )
    .bind(NOW - MINUTE_RETENTION_MS - 60_000)
    .execute(&db.pool)
    .await
    .unwrap();

    let done = nodes::roll_up(db, NOW, FULL_RATE_MS, MINUTE_RETENTION_MS).await.unwrap();
    assert_eq!(done, RollUp { minutes: 4, samples: 7, pruned: 2 });
    let rows = minutes(db).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    check(&rows[0], "a", M1, 3, 30.0, Some(60.0), 2, 2.0);
    check(&rows[1], "a", M2, 1, 40.0, None, 0, 4.0);
    check(&rows[2], "b", M1, 2, 60.0, None, 0, 1.5);
    assert_eq!(full_rate(db).await, [("a".to_string(), CUTOFF), ("a".to_string(), NOW - 30 * 60_000)]);

    // Again: nothing left to move, nothing counted twice.
    let again = nodes::roll_up(db, NOW, FULL_RATE_MS, MINUTE_RETENTION_MS).await.unwrap();
    assert_eq!(again, RollUp::default());
    assert_eq!(minutes(db).await, rows);

    // A sample that arrives late for a minute already rolled up is merged, weighted.
    sample(db, "a", M1 + 30_000, 50.0, Some(90.0), 6.0).await;
    let late = nodes::roll_up(db, NOW, FULL_RATE_MS, MINUTE_RETENTION_MS).await.unwrap();
    assert_eq!(late, RollUp { minutes: 1, samples: 1, pruned: 0 });
    let rows = minutes(db).await;
    // cpu (10 + 20 + 60 + 50) / 4; temperature (50 + 70 + 90) / 3; score (1 + 2 + 3 + 6) / 4.
    check(&rows[0], "a", M1, 4, 35.0, Some(70.0), 3, 3.0);
    check(&rows[1], "a", M2, 1, 40.0, None, 0, 4.0);

    // A minute later the cutoff moves on, and the half-minute left behind goes too.
    let next = nodes::roll_up(db, NOW + 60_000, FULL_RATE_MS, MINUTE_RETENTION_MS).await.unwrap();
    assert_eq!(next, RollUp { minutes: 1, samples: 1, pruned: 0 });
    check(&minutes(db).await[2], "a", CUTOFF, 1, 90.0, Some(40.0), 1, 5.0);
    assert_eq!(full_rate(db).await, [("a".to_string(), NOW - 30 * 60_000)]);
    t.close().await;
}

async fn history_spans_minutes_and_full_rate(kind: DbKind) {
    let t = TestDb::new(kind).await;
    let db = &t.db;
    seed_nodes(db).await;
    seed_samples(db).await;
    sample(db, "a", NOW - 60_000, 77.0, None, 7.0).await;
    nodes::roll_up(db, NOW, FULL_RATE_MS, MINUTE_RETENTION_MS).await.unwrap();

    // Two hours: a's two rolled-up minutes, then its full-rate samples, in time order.
    let two_hours = 2 * 3_600_000;
    let h = nodes::history(db, Scope::Node("a"), NOW, two_hours, 1000).await.unwrap();
    assert_eq!(h.len(), 1, "only node a: {:?}", h.keys());
    let a = &h["a"];
    let at: Vec<i64> = a.iter().map(|s| s.at_ms).collect();
    assert_eq!(at, [M1, M2, CUTOFF, NOW - 30 * 60_000, NOW - 60_000]);
    let cpu: Vec<f64> = a.iter().map(|s| s.free_cpu_pct).collect();
    assert_eq!(cpu, [30.0, 40.0, 90.0, 80.0, 77.0]);
    assert_eq!(a[0].temperature_c, Some(60.0));
    assert_eq!(a[1].temperature_c, None);

    // Ten minutes: full rate only.
    let h = nodes::history(db, Scope::Node("a"), NOW, 10 * 60_000, 1000).await.unwrap();
    assert_eq!(h["a"].iter().map(|s| s.at_ms).collect::<Vec<_>>(), [NOW - 60_000]);

    // Thinned to one point: a weighted average, a minute of three samples weighing three.
    let h = nodes::history(db, Scope::Node("a"), NOW, two_hours, 1).await.unwrap();
    let one = &h["a"];
    assert_eq!(one.len(), 1, "{one:?}");
    // cpu (30·3 + 40 + 90 + 80 + 77) / 7; temperature (60·2 + 40) / 3; dated by the newest.
    assert!(close(one[0].free_cpu_pct, 377.0 / 7.0), "{one:?}");
    assert!(close(one[0].temperature_c.unwrap(), 160.0 / 3.0), "{one:?}");
    assert_eq!(one[0].at_ms, NOW - 60_000);

    // An owner's scope holds both nodes; another user's holds none.
    let h = nodes::history(db, Scope::Owner("u1"), NOW, two_hours, 1000).await.unwrap();
    assert_eq!(h["b"].iter().map(|s| (s.at_ms, s.free_cpu_pct)).collect::<Vec<_>>(), [(M1, 60.0)]);
    assert_eq!(h["a"].len(), 5);
    assert!(nodes::history(db, Scope::Owner("u2"), NOW, two_hours, 1000).await.unwrap().is_empty());
    // A removed node leaves the fleet's charts but keeps its own page's.
    sqlx::query("update nodes set admin_state = 'removed' where id = 'b'").execute(&db.pool).await.unwrap();
    assert!(!nodes::history(db, Scope::All, NOW, two_hours, 1000).await.unwrap().contains_key("b"));
    assert_eq!(nodes::history(db, Scope::Node("b"), NOW, two_hours, 1000).await.unwrap()["b"].len(), 1);
    t.close().await;
}

/// Two roll-ups at once (two servers, or a slow one overlapping the next): each sample is
/// counted once.
async fn concurrent_roll_ups_count_once(kind: DbKind) {
    let t = TestDb::new(kind).await;
    let db = &t.db;
    seed_nodes(db).await;
    let mut inserted = 0u64;
    for minute in 0..20 {
        for i in 0..10 {
            sample(db, if i % 2 == 0 { "a" } else { "b" }, M1 - minute * 60_000 + i * 1000, 50.0, None, 1.0).await;
            inserted += 1;
        }
    }
    let (x, y) = tokio::join!(
        nodes::roll_up(db, NOW, FULL_RATE_MS, MINUTE_RETENTION_MS),
        nodes::roll_up(db, NOW, FULL_RATE_MS, MINUTE_RETENTION_MS)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.samples + y.samples, inserted, "{x:?} {y:?}");
    let rows = minutes(db).await;
    assert_eq!(rows.len(), 40);
    assert_eq!(rows.iter().map(|r| r.2).sum::<i64>(), inserted as i64, "{rows:?}");
    assert!(full_rate(db).await.is_empty());
    t.close().await;
}

/// A flush with nodes that report a temperature and nodes that do not, in either order, on one
/// connection (PostgreSQL once refused the second kind after the first).
async fn known_and_unknown_temperatures_are_saved_together(kind: DbKind) {
    let t = TestDb::new(kind).await;
    let db = &t.db;
    seed_nodes(db).await;
    let latest = |node: &str, at: i64, temp: Option<f64>| Latest {
        node_id: node.into(),
        at,
        sent_at: at,
        metrics: NodeMetrics {
            free_cpu_pct: 50.0,
            free_mem_pct: 50.0,
            free_ram_gib: 1.0,
            events_per_sec: 100.0,
            temperature_c: temp,
            running_jobs: 0,
        },
        facts: None,
        score: Score { load: 1.0, perf: 1.0, thermal: 1.0, total: 1.0 },
    };
    nodes::save_latest(db, None, &[latest("a", 1, None), latest("b", 1, Some(55.5)), latest("a", 2, None)]).await.unwrap();
    nodes::save_latest(db, None, &[latest("b", 3, Some(56.0)), latest("a", 3, None)]).await.unwrap();
    let temps: Vec<(String, i64, Option<f64>)> =
        sqlx::query_as("select node_id, at, temperature_c from node_samples order by at, node_id").fetch_all(&db.pool).await.unwrap();
    assert_eq!(
        temps,
        [("a".into(), 1, None), ("b".into(), 1, Some(55.5)), ("a".into(), 2, None), ("a".into(), 3, None), ("b".into(), 3, Some(56.0))]
    );
    t.close().await;
}
