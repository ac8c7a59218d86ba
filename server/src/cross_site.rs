//! Cross-site requests that change something are refused before any handler runs. A browser
//! says where a request comes from (`Sec-Fetch-Site`, and `Origin` on a POST); a page on another
//! site, even a sibling subdomain, cannot make a signed-in user's browser cancel a job or sign
//! it in to the attacker's account (login CSRF). Reads stay open, and clients that are not
//! browsers (scripts with a token, agents) send neither header and are not concerned.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use app::backend::AppState;

/// Why a request counts as cross-site, if it does.
fn cross_site(headers: &HeaderMap, public_url: &str) -> Option<&'static str> {
    let text = |name| headers.get(name).and_then(|v: &axum::http::HeaderValue| v.to_str().ok());
    // "same-origin" is this site; "none" is the user's own doing (a bookmark, the address bar).
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        return matches!(site, "cross-site" | "same-site").then_some("the request comes from another site");
    }
    let origin = text(header::ORIGIN)?;
    let host = text(header::HOST).unwrap_or_default();
    let same = origin.split_once("://").is_some_and(|(_, authority)| authority == host) || origin == public_url.trim_end_matches('/');
    (!same).then_some("the request's origin is another site")
}

pub async fn same_site_only(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !req.method().is_safe() {
        if let Some(why) = cross_site(req.headers(), &state.settings.public_url) {
            tracing::warn!(method = %req.method(), path = req.uri().path(), why, "cross-site request refused");
            let body = serde_json::json!({ "error": { "code": "cross_site", "message": why } });
            return (StatusCode::FORBIDDEN, Json(body)).into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn browsers_say_where_a_request_comes_from() {
        let public = "https://edge.example.org";
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")]), public).is_some());
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")]), public).is_some(), "a sibling subdomain");
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-origin"), ("origin", "https://evil.example")]), public).is_none());
        assert!(cross_site(&headers(&[("sec-fetch-site", "none")]), public).is_none());
        // Older browsers send only Origin.
        assert!(cross_site(&headers(&[("origin", "https://evil.example"), ("host", "edge.example.org")]), public).is_some());
        assert!(cross_site(&headers(&[("origin", "null"), ("host", "edge.example.org")]), public).is_some());
        assert!(cross_site(&headers(&[("origin", "https://edge.example.org"), ("host", "edge.example.org")]), public).is_none());
        // Behind a proxy that rewrites Host, the public URL is this site.
        assert!(cross_site(&headers(&[("origin", "https://edge.example.org"), ("host", "127.0.0.1:3000")]), public).is_none());
        // Scripts and agents send neither.
        assert!(cross_site(&headers(&[("authorization", "Bearer aie_x")]), public).is_none());
    }
}
