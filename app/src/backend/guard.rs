//! Which pages need whom. Pages are checked here, before rendering, so an anonymous visitor is
//! redirected to the login page (with a way back) and a non-admin gets a 403, whether or not the
//! browser runs the WASM. Server functions check again for themselves
//! ([`super::require_user`], [`super::require_admin`]).

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;

use super::CurrentUser;

/// Path prefixes that need a signed-in user.
const SIGNED_IN: &[&str] = &["/home", "/admin", "/usage", "/nodes", "/jobs", "/apps", "/schedules", "/settings"];
/// Path prefixes that need an admin.
const ADMIN: &[&str] = &["/admin", "/usage"];

fn under(path: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| path == *p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')))
}

pub async fn guard_pages(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if !under(&path, SIGNED_IN) {
        return next.run(req).await;
    }
    let user = req.extensions().get::<CurrentUser>().and_then(|u| u.0.clone());
    match user {
        None => {
            let next_param: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
            Redirect::to(&format!("/login?next={next_param}")).into_response()
        }
        Some(user) if under(&path, ADMIN) && !user.is_admin() => {
            // Render the page (it explains itself) but answer 403.
            let mut res = next.run(req).await;
            *res.status_mut() = StatusCode::FORBIDDEN;
            res
        }
        Some(_) => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(under("/admin", ADMIN));
        assert!(under("/admin/nodes", ADMIN));
        assert!(!under("/administrator", ADMIN));
        assert!(!under("/", SIGNED_IN));
        assert!(under("/home", SIGNED_IN));
    }
}
