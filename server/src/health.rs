//! `GET /healthz`: 200 when the database and the broker answer, 503 naming the one that does not.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;

use crate::broker::Broker;
use app::backend::AppState;

#[derive(Serialize)]
pub struct Health {
    status: &'static str,
    database: &'static str,
    broker: &'static str,
}

fn word(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "unreachable"
    }
}

pub async fn healthz(State(state): State<AppState>, Extension(broker): Extension<Broker>) -> (StatusCode, Json<Health>) {
    let (db_ok, broker_ok) = tokio::join!(state.db.ping(), broker.is_connected());
    let ok = db_ok && broker_ok;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Health { status: if ok { "ok" } else { "degraded" }, database: word(db_ok), broker: word(broker_ok) }))
}
