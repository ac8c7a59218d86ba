//! The browser's files (`pkg/`: the WASM, its JS glue, the CSS) under a path that names their
//! content, `/pkg/<version>/…`, so a browser may keep them for a year and never asks again; a new
//! build has a new version, so pages point at new paths and nothing stale is ever used.
//!
//! The version is a digest of the files, taken once at start-up: no build step has to write a
//! manifest next to the binary, and tests and tools that have no site get a stable placeholder.
//! Files are sent precompressed when the build made `.br`/`.gz` siblings (`cargo leptos build
//! --release --precompress`), else as they are (the response compression layer may still
//! compress them).

use std::path::{Path, PathBuf};

use axum::http::{header, HeaderValue, Response};
use axum::Router;
use sha2::{Digest, Sha256};
use tower::ServiceBuilder;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

/// How long a browser keeps a versioned file: a year, the longest caches honour.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Hex digits of the digest in the path: enough that two builds never collide in practice.
const VERSION_CHARS: usize = 16;

/// The path pages name the files under, relative to the site root: `pkg/<version>` (Leptos's
/// `site_pkg_dir`). A missing or unreadable `pkg/` gives the version `none`: pages still render
/// (they work without WASM), and the missing files answer 404.
pub fn pkg_path(site_root: &Path) -> String {
    let dir = site_root.join("pkg");
    let mut files = Vec::new();
    collect(&dir, &dir, &mut files);
    files.sort();
    if files.is_empty() {
        return "pkg/none".to_string();
    }
    let mut digest = Sha256::new();
    for (name, path) in &files {
        let Ok(bytes) = std::fs::read(path) else { continue };
        // Name and length first, so moving bytes between files changes the version.
        digest.update(name.as_bytes());
        digest.update([0]);
        digest.update((bytes.len() as u64).to_le_bytes());
        digest.update(&bytes);
    }
    format!("pkg/{}", &hex::encode(digest.finalize())[..VERSION_CHARS])
}

/// Serves `site_root/pkg` under `/<pkg_path>/` (from [`pkg_path`]), with a year-long cache on
/// what is found. Another version falls through to the router's fallback (a 404 for a file that
/// is gone).
pub fn serve<S: Clone + Send + Sync + 'static>(router: Router<S>, site_root: &Path, pkg_path: &str) -> Router<S> {
    let files = ServeDir::new(site_root.join("pkg")).precompressed_br().precompressed_gzip();
    let cached = ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, |res: &Response<_>| {
            res.status().is_success().then_some(HeaderValue::from_static(IMMUTABLE))
        }))
        .service(files);
    router.nest_service(&format!("/{pkg_path}"), cached)
}

/// Every file under `dir`, named relative to `root`, except the compressed copies of the others.
fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            collect(root, &path, out);
        } else if kind.is_file() && !matches!(path.extension().and_then(|e| e.to_str()), Some("br" | "gz")) {
            let name = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            out.push((name, path));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_version_follows_the_content_and_ignores_compressed_copies() {
        let site = tempfile::tempdir().unwrap();
        let pkg = site.path().join("pkg");
        assert_eq!(pkg_path(site.path()), "pkg/none");
        std::fs::create_dir_all(pkg.join("snippets")).unwrap();
        std::fs::write(pkg.join("aiedge.js"), "js").unwrap();
        std::fs::write(pkg.join("snippets/a.js"), "a").unwrap();
        let first = pkg_path(site.path());
        assert_ne!(first, "pkg/none");
        assert_eq!(first.len(), "pkg/".len() + VERSION_CHARS);
        std::fs::write(pkg.join("aiedge.js.br"), "compressed").unwrap();
        assert_eq!(pkg_path(site.path()), first, "a compressed copy is not new content");
        std::fs::write(pkg.join("snippets/a.js"), "b").unwrap();
        assert_ne!(pkg_path(site.path()), first, "changed content, new version");
    }
}
