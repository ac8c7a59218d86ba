//! `GET /healthz`: 200 when the database and the broker answer, 503 naming the one that does not.
//! It also says whether this replica holds the lease (see [`crate::leadership`]): a standby is
//! healthy, it simply does not run the work that happens once.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;

use crate::broker::Broker;
use crate::leadership::Leadership;
use app::backend::AppState;

#[derive(Serialize)]
pub struct Health {
    status: &'static str,
    database: &'static str,
    broker: &'static str,
    /// This server process.
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<String>,
    /// `holder` or `standby`.
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<&'static str>,
    /// The holder's term.
    #[serde(skip_serializing_if = "Option::is_none")]
    term: Option<i64>,
}

fn word(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "unreachable"
    }
}

pub async fn healthz(
    State(state): State<AppState>,
    Extension(broker): Extension<Broker>,
    leadership: Option<Extension<Leadership>>,
) -> (StatusCode, Json<Health>) {
    let (db_ok, broker_ok) = tokio::join!(state.db.ping(), broker.is_connected());
    let ok = db_ok && broker_ok;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let role = leadership.as_ref().map(|Extension(l)| l.role());
    let health = Health {
        status: if ok { "ok" } else { "degraded" },
        database: word(db_ok),
        broker: word(broker_ok),
        replica: leadership.as_ref().map(|Extension(l)| l.replica.id.clone()),
        lease: role.map(|r| if r.is_holder() { "holder" } else { "standby" }),
        term: role.and_then(|r| r.fence()).map(|f| f.term),
    };
    (status, Json(health))
}
