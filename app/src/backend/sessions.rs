//! Signing in and out, and the middleware that resolves the signed-in user once per request.
//! The sessions themselves are kept server-side by `aiedge_store::sessions`; the cookie holds
//! only a random id.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use leptos::prelude::ServerFnError;
use tower_sessions::{Expiry, Session};

use aiedge_core::views::UserView;
use aiedge_store::sessions::{REMEMBER_FOR, USER_ID};
use aiedge_store::users;

use super::{AppState, CurrentUser};

async fn session() -> Result<Session, ServerFnError> {
    leptos_axum::extract::<Session>().await.map_err(|e| ServerFnError::new(e.to_string()))
}

/// Starts a session for `user`, under a fresh id so a planted session id is useless.
pub async fn sign_in(user: &UserView, remember: bool) -> Result<(), ServerFnError> {
    let session = session().await?;
    session.cycle_id().await.map_err(super::internal)?;
    session.insert(USER_ID, &user.id).await.map_err(super::internal)?;
    session.set_expiry(Some(if remember { Expiry::OnInactivity(REMEMBER_FOR) } else { Expiry::OnSessionEnd }));
    tracing::info!(user_id = %user.id, remember, "signed in");
    Ok(())
}

/// Ends the current session on the server and clears the cookie.
pub async fn sign_out() -> Result<(), ServerFnError> {
    let session = session().await?;
    session.flush().await.map_err(super::internal)?;
    Ok(())
}

/// Middleware: finds the signed-in user (if any) and puts [`CurrentUser`] in the request's
/// extensions for the guard, the pages and the server functions. A broken or unknown session
/// counts as anonymous.
pub async fn resolve_user(State(state): State<AppState>, session: Session, mut req: Request, next: Next) -> Response {
    let user = match session.get::<String>(USER_ID).await {
        Ok(Some(id)) => match users::find_by_id(&state.db, &id).await {
            // A disabled account's sessions were ended; one that raced the disabling is no use.
            Ok(user) => user.filter(|u| !u.disabled),
            Err(e) => {
                tracing::error!(error = %e, "user lookup failed");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable session ignored");
            None
        }
    };
    req.extensions_mut().insert(CurrentUser(user));
    next.run(req).await
}
