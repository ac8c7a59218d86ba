//! The service tier: each use case against a real SQLite database in a temp dir, with no broker
//! and no agent, and the events it raises recorded. Seconds, not minutes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use aiedge_core::views::{AppDetails, UserView};
use aiedge_core::{AdminState, JobStatus, Pool, Role};
use aiedge_services::{Events, ServiceError};
use aiedge_store::{apps, jobs, nodes, users, Db};

/// Records what the use cases raise.
#[derive(Default)]
struct Recorded(Mutex<Vec<String>>);

impl Recorded {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Events for Recorded {
    fn job_changed(&self, job_id: &str) {
        self.0.lock().unwrap().push(format!("job_changed {job_id}"));
    }
    fn job_ended(&self, job_id: &str) {
        self.0.lock().unwrap().push(format!("job_ended {job_id}"));
    }
    fn dispatch_wanted(&self) {
        self.0.lock().unwrap().push("dispatch_wanted".into());
    }
    fn node_changed(&self, node_id: &str) {
        self.0.lock().unwrap().push(format!("node_changed {node_id}"));
    }
    fn node_removed(&self, node_id: &str) {
        self.0.lock().unwrap().push(format!("node_removed {node_id}"));
    }
}

struct World {
    db: Db,
    _dir: tempfile::TempDir,
    alice: UserView,
    bob: UserView,
    admin: UserView,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/t.db", dir.path().display())).await.unwrap();
    let alice = users::create(&db, "alice@example.org", "a long password", None, Role::User).await.unwrap();
    let bob = users::create(&db, "bob@example.org", "a long password", None, Role::User).await.unwrap();
    let admin = users::create(&db, "root@example.org", "a long password", None, Role::Admin).await.unwrap();
    World { db, _dir: dir, alice, bob, admin }
}

/// A queued job of `owner`'s, recorded through the store's intake as the API does.
async fn queued_job(w: &World, owner: &UserView) -> String {
    let app = apps::create(
        &w.db,
        apps::NewApp {
            id: uuid::Uuid::new_v4().to_string(),
            owner_id: owner.id.clone(),
            name: format!("model-{}", uuid::Uuid::new_v4().simple()),
            kind: shared_kind(),
            artifact_key: "apps/model.onnx".into(),
            sha256: "0".repeat(64),
            size_bytes: 1,
            details: AppDetails::Onnx { inputs: vec![], outputs: vec![], features: 1, columns: vec![] },
            runtime: None,
            features: Some(1),
            default_input: None,
        },
    )
    .await
    .unwrap();
    let intake = jobs::Intake::start(&w.db);
    // Keys are unique, as the API makes them: a deleted account's must not be another's.
    let input_key = format!("inline:inputs/{}.csv", uuid::Uuid::new_v4());
    let job = jobs::create(
        &intake,
        jobs::NewJob {
            owner,
            app: &app,
            input_key: &input_key,
            input_name: "in.csv",
            input_rows: Some(1),
            max_attempts: 3,
            pool: aiedge_core::Pool::Shared,
            inline_input: Some("1\n"),
        },
    )
    .await
    .unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    job.id
}

fn shared_kind() -> shared::jobs::AppKind {
    shared::jobs::AppKind::Onnx
}

async fn status(w: &World, id: &str) -> JobStatus {
    jobs::view(&w.db, id).await.unwrap().unwrap().status
}

#[tokio::test]
async fn the_owner_cancels_and_the_dispatcher_hears_of_it() {
    let w = world().await;
    let events = Recorded::default();
    let id = queued_job(&w, &w.alice).await;
    let job = aiedge_services::jobs::cancel(&w.db, &events, &w.alice, &id).await.unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!(events.take(), vec![format!("job_changed {id}"), format!("job_ended {id}"), "dispatch_wanted".to_string()]);

    // Again: a conflict, and nothing is raised.
    let again = aiedge_services::jobs::cancel(&w.db, &events, &w.alice, &id).await.unwrap_err();
    assert!(matches!(again, ServiceError::Conflict { code: "already_finished", .. }), "{again:?}");
    assert_eq!(again.status(), 409);
    assert!(events.take().is_empty());
}

#[tokio::test]
async fn someone_elses_job_looks_missing_and_stays_as_it_was() {
    let w = world().await;
    let events = Recorded::default();
    let id = queued_job(&w, &w.alice).await;
    let err = aiedge_services::jobs::cancel(&w.db, &events, &w.bob, &id).await.unwrap_err();
    assert!(matches!(err, ServiceError::NotFound("job")), "{err:?}");
    assert_eq!(err.status(), 404);
    assert!(matches!(aiedge_services::jobs::get(&w.db, &w.bob, &id).await, Err(ServiceError::NotFound(_))));
    assert_eq!(status(&w, &id).await, JobStatus::Queued);
    assert!(events.take().is_empty());

    // An admin may.
    aiedge_services::jobs::cancel(&w.db, &events, &w.admin, &id).await.unwrap();
    assert_eq!(status(&w, &id).await, JobStatus::Cancelled);
    assert_eq!(aiedge_services::jobs::get(&w.db, &w.alice, &id).await.unwrap().status, JobStatus::Cancelled);
}

#[tokio::test]
async fn owners_and_admins_change_a_nodes_admin_state_and_removal_is_final() {
    let w = world().await;
    let events = Recorded::default();
    let thermal = shared::score::ThermalPolicy { warn_c: 80.0, critical_c: 90.0 };
    let node = nodes::add(&w.db, &thermal, "http://127.0.0.1:1", &w.alice.id, "box").await.unwrap().node;

    // Someone else's node looks like none at all, and stays as it was.
    let err = aiedge_services::nodes::set_admin_state(&w.db, &events, &w.bob, &node.id, AdminState::Disabled).await.unwrap_err();
    assert_eq!(err.status(), 404);
    assert_eq!(nodes::get(&w.db, &node.id, &thermal).await.unwrap().unwrap().admin_state, AdminState::Enabled);
    assert!(events.take().is_empty());
    // Its owner drains it.
    aiedge_services::nodes::set_admin_state(&w.db, &events, &w.alice, &node.id, AdminState::Draining).await.unwrap();
    assert_eq!(nodes::get(&w.db, &node.id, &thermal).await.unwrap().unwrap().admin_state, AdminState::Draining);
    events.take();

    aiedge_services::nodes::set_admin_state(&w.db, &events, &w.admin, &node.id, AdminState::Removed).await.unwrap();
    assert_eq!(
        events.take(),
        vec![format!("node_changed {}", node.id), format!("node_removed {}", node.id), "dispatch_wanted".to_string()]
    );
    let err = aiedge_services::nodes::set_admin_state(&w.db, &events, &w.admin, &node.id, AdminState::Enabled).await.unwrap_err();
    assert!(matches!(err, ServiceError::NotFound("node")), "{err:?}");
    assert!(events.take().is_empty());
}

#[tokio::test]
async fn a_submission_is_checked_before_anything_is_stored_and_wakes_the_dispatcher() {
    use aiedge_services::jobs::{submit, Input, Intakes};
    use aiedge_store::artifacts::{LocalStore, Received};
    let w = world().await;
    let events = Recorded::default();
    let first = queued_job(&w, &w.alice).await; // also makes one of Alice's applications
    let app = jobs::view(&w.db, &first).await.unwrap().unwrap().app_id;
    let data = tempfile::tempdir().unwrap();
    let store = LocalStore::new(data.path()).unwrap();
    let intake = jobs::Intake::start(&w.db);
    let to = Intakes { db: &w.db, intake: &intake, artifacts: &store, events: &events, max_attempts: 3 };
    let sent = |text: &str| Input::Sent { received: Received::Inline { text: text.into(), sha256: String::new() }, name: "in.csv".into() };
    let count = || async { jobs::list(&w.db, None, 1000).await.unwrap().len() };
    let before = count().await;

    // Two columns for a one-feature model; not a number; nothing at all; someone else's app.
    for (input, code) in [(sent("a,b\n1,2\n"), "invalid_csv"), (sent("a\nx\n"), "invalid_csv"), (sent(""), "invalid_csv")] {
        let err = submit(&to, &w.alice, &app, input, Pool::Shared).await.unwrap_err();
        assert_eq!((err.status(), err.code()), (422, code), "{err:?}");
    }
    let err = submit(&to, &w.bob, &app, sent("a\n1\n"), Pool::Shared).await.unwrap_err();
    assert_eq!(err.status(), 404);
    let err = submit(&to, &w.alice, &app, Input::Default, Pool::Shared).await.unwrap_err();
    assert_eq!(err.code(), "missing_input", "{err:?}");
    assert_eq!(count().await, before, "a refused submission records nothing");
    assert!(events.take().is_empty());

    let job = submit(&to, &w.alice, &app, sent("a\n1\n2\n"), Pool::Own).await.unwrap();
    assert_eq!((job.status, job.input_rows, job.pool), (JobStatus::Queued, Some(2), Pool::Own));
    assert_eq!(events.take(), vec![format!("job_changed {}", job.id), "dispatch_wanted".to_string()]);
    assert_eq!(count().await, before + 1);
}

/// Reserves the job's next attempt for `node` as the dispatcher does; returns its number.
async fn dispatch(w: &World, id: &str, node: &str) -> u32 {
    let attempt = jobs::view(&w.db, id).await.unwrap().unwrap().attempt;
    let decision = shared::jobs::Decision { at_ms: 0, attempt: attempt + 1, chosen: node.into(), candidates: vec![], more: 0 };
    let reservation = jobs::Reservation { id, expected_attempt: attempt as i32, node_id: node, node_name: "box", decision: &decision };
    assert_eq!(jobs::mark_dispatched(&w.db, None, &[reservation]).await.unwrap(), vec![true]);
    attempt + 1
}

#[tokio::test]
async fn a_job_given_back_too_often_counts_an_attempt_and_cannot_bounce_for_ever() {
    use aiedge_services::attempts::{give_back, FREE_RETURNS};
    let w = world().await;
    let events = Recorded::default();
    let thermal = shared::score::ThermalPolicy { warn_c: 80.0, critical_c: 90.0 };
    let node = nodes::add(&w.db, &thermal, "http://127.0.0.1:1", &w.alice.id, "box").await.unwrap().node.id;
    let other = nodes::add(&w.db, &thermal, "http://127.0.0.1:1", &w.alice.id, "other").await.unwrap().node.id;
    let id = queued_job(&w, &w.alice).await;

    // The free give-backs: queued again, the attempt forgotten.
    for _ in 0..FREE_RETURNS {
        let attempt = dispatch(&w, &id, &node).await;
        assert_eq!(attempt, 1);
        assert_eq!(give_back(&w.db, &events, &node, &id, attempt).await.unwrap(), aiedge_core::Verdict::Proceed);
        assert_eq!(status(&w, &id).await, JobStatus::Queued);
        assert_eq!(events.take(), vec![format!("job_changed {id}"), "dispatch_wanted".to_string()]);
    }
    // Another node's give-back of an attempt that is not its own changes nothing.
    let attempt = dispatch(&w, &id, &node).await;
    assert!(matches!(give_back(&w.db, &events, &other, &id, attempt).await.unwrap(), aiedge_core::Verdict::Stop(_)));
    assert_eq!(status(&w, &id).await, JobStatus::Dispatched);
    assert!(events.take().is_empty());

    // From now on each one counts: attempt 1 is lost, the job queued for attempt 2 of 3...
    give_back(&w.db, &events, &node, &id, attempt).await.unwrap();
    let job = jobs::view(&w.db, &id).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempt), (JobStatus::Queued, 1));
    let attempts = jobs::attempts(&w.db, &id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, aiedge_core::AttemptOutcome::Lost);
    assert!(attempts[0].reason.as_deref().unwrap_or_default().contains("given back"), "{attempts:?}");
    events.take();
    // ...and after the last attempt the job fails for good, and its end is announced.
    for _ in 0..2 {
        let attempt = dispatch(&w, &id, &node).await;
        give_back(&w.db, &events, &node, &id, attempt).await.unwrap();
    }
    assert_eq!(status(&w, &id).await, JobStatus::Failed);
    assert!(events.take().contains(&format!("job_ended {id}")));
}

#[tokio::test]
async fn only_the_owner_or_an_admin_shares_a_node_and_only_with_real_accounts() {
    use aiedge_core::Sharing;
    use aiedge_services::nodes::set_sharing;
    let w = world().await;
    let events = Recorded::default();
    let thermal = shared::score::ThermalPolicy { warn_c: 80.0, critical_c: 90.0 };
    let node = nodes::add(&w.db, &thermal, "http://127.0.0.1:1", &w.alice.id, "box").await.unwrap().node;
    assert_eq!(node.sharing, Sharing::Private, "private by default");
    let sharing_now = || async { nodes::get(&w.db, &node.id, &thermal).await.unwrap().unwrap().sharing };

    let err = set_sharing(&w.db, &events, &w.bob, &node.id, Sharing::Everyone, &[]).await.unwrap_err();
    assert!(matches!(err, ServiceError::NotFound("node")), "someone else's node looks missing: {err:?}");
    let err = set_sharing(&w.db, &events, &w.alice, &node.id, Sharing::Users, &["bob@example.org".into(), "ghost@example.org".into()])
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.code()), (422, "unknown_user"));
    let err = set_sharing(&w.db, &events, &w.alice, &node.id, Sharing::Users, &[" ".into()]).await.unwrap_err();
    assert_eq!(err.code(), "no_users");
    assert_eq!(sharing_now().await, Sharing::Private, "a refused change changes nothing");
    assert!(events.take().is_empty());

    set_sharing(&w.db, &events, &w.alice, &node.id, Sharing::Users, &[" BOB@example.org".into(), "bob@example.org".into()]).await.unwrap();
    assert_eq!(events.take(), vec![format!("node_changed {}", node.id), "dispatch_wanted".to_string()]);
    assert_eq!(sharing_now().await, Sharing::Users);
    assert_eq!(nodes::shared_with(&w.db, &node.id).await.unwrap(), vec!["bob@example.org".to_string()]);
    // An admin may change it; going back to private forgets the names.
    set_sharing(&w.db, &events, &w.admin, &node.id, Sharing::Private, &["bob@example.org".into()]).await.unwrap();
    assert!(nodes::shared_with(&w.db, &node.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn deleting_an_account_moves_other_accounts_jobs_off_its_nodes() {
    use aiedge_core::AttemptOutcome;
    use aiedge_services::accounts::delete;
    use aiedge_store::artifacts::LocalStore;
    let w = world().await;
    let events = Recorded::default();
    let data = tempfile::tempdir().unwrap();
    let store = LocalStore::new(data.path()).unwrap();
    let thermal = shared::score::ThermalPolicy { warn_c: 80.0, critical_c: 90.0 };
    let node = nodes::add(&w.db, &thermal, "http://127.0.0.1:1", &w.alice.id, "box").await.unwrap().node.id;
    // Bob's job on Alice's node, and one of Alice's own.
    let bobs = queued_job(&w, &w.bob).await;
    let alices = queued_job(&w, &w.alice).await;
    assert_eq!(dispatch(&w, &bobs, &node).await, 1);
    dispatch(&w, &alices, &node).await;

    // Only admins, never on their own account, and only accounts that exist.
    let err = delete(&w.db, &store, &events, &w.bob, &w.alice.id).await.unwrap_err();
    assert_eq!(err.status(), 403);
    let err = delete(&w.db, &store, &events, &w.admin, &w.admin.id).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (422, "own_account"));
    let err = delete(&w.db, &store, &events, &w.admin, "no-such-id").await.unwrap_err();
    assert!(matches!(err, ServiceError::NotFound("account")), "{err:?}");
    assert!(events.take().is_empty());
    assert_eq!(status(&w, &bobs).await, JobStatus::Dispatched, "a refused deletion changes nothing");

    let deleted = delete(&w.db, &store, &events, &w.admin, &w.alice.id).await.unwrap();
    assert_eq!((deleted.email.as_str(), deleted.jobs, deleted.applications), ("alice@example.org", 1, 1));
    assert_eq!(deleted.unfinished_jobs, vec![alices.clone()]);
    assert_eq!(deleted.nodes, vec![node.clone()]);
    assert_eq!(deleted.moved_jobs, vec![(bobs.clone(), true)]);
    assert_eq!(
        events.take(),
        vec![
            format!("job_changed {alices}"),
            format!("job_ended {alices}"),
            format!("job_changed {bobs}"),
            format!("node_changed {node}"),
            format!("node_removed {node}"),
            "dispatch_wanted".to_string(),
        ]
    );
    // Bob's job is queued for another node; its lost attempt keeps the node's name, not its id.
    let job = jobs::view(&w.db, &bobs).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempt, job.node_id), (JobStatus::Queued, 1, None));
    let attempts = jobs::attempts(&w.db, &bobs).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!((attempts[0].outcome, attempts[0].reason.as_deref()), (AttemptOutcome::Lost, Some("node removed")));
    assert_eq!((attempts[0].node_id.as_deref(), attempts[0].node_name.as_str()), (None, "box"));
    // Alice and hers are gone; Bob is not.
    assert!(jobs::view(&w.db, &alices).await.unwrap().is_none());
    assert!(nodes::get(&w.db, &node, &thermal).await.unwrap().is_none());
    assert!(users::find_by_id(&w.db, &w.alice.id).await.unwrap().is_none());
    assert!(users::find_by_id(&w.db, &w.bob.id).await.unwrap().is_some());
    let err = delete(&w.db, &store, &events, &w.admin, &w.alice.id).await.unwrap_err();
    assert!(matches!(err, ServiceError::NotFound("account")), "{err:?}");
}
