//! Where models, bundles, inputs, results and logs live: the data directory by default, behind
//! [`ArtifactStore`] so an S3-compatible store can take over without touching the handlers.
//!
//! Uploads are streamed into a [`Staged`] file first (hashed and size-checked on the way, never
//! whole in memory), validated there, and only then committed under their key, so a refused
//! upload leaves nothing behind.
//!
//! Job inputs and results of at most [`INLINE_MAX`] bytes of text (most interactive jobs) are
//! [`Received::Inline`] instead: they never touch the disk and are stored in the database
//! (`inline_artifacts`) in the transaction of the job row that refers to them, under a key that
//! starts with [`INLINE_PREFIX`]. [`open`] reads either kind.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWriteExt};

pub use shared::jobs::INLINE_MAX;

use super::Db;

/// Keys of the artifacts kept in the database.
pub const INLINE_PREFIX: &str = "inline:";

/// The database key for what the store would keep under `key`.
pub fn inline_key(key: &str) -> String {
    format!("{INLINE_PREFIX}{key}")
}

/// Stores a small artifact under `key` (an [`inline_key`]), in the caller's transaction.
pub async fn put_inline(conn: &mut sqlx::AnyConnection, key: &str, content: &str) -> Result<(), sqlx::Error> {
    sqlx::query("insert into inline_artifacts (key, content, created_at) values ($1, $2, $3)")
        .bind(key)
        .bind(content)
        .bind(super::now_ms())
        .execute(conn)
        .await?;
    Ok(())
}

/// The content of an inline artifact.
pub async fn inline_content(db: &Db, key: &str) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> =
        sqlx::query_as("select content from inline_artifacts where key = $1").bind(key).fetch_optional(&db.pool).await?;
    Ok(row.map(|(c,)| c))
}

/// Opens an artifact, from the database or the store.
pub async fn open(db: &Db, store: &dyn ArtifactStore, key: &str) -> io::Result<Artifact> {
    if !key.starts_with(INLINE_PREFIX) {
        return store.open(key).await;
    }
    let content = inline_content(db, key)
        .await
        .map_err(io::Error::other)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no artifact {key}")))?;
    Ok(Artifact { len: content.len() as u64, reader: Box::pin(io::Cursor::new(content.into_bytes())) })
}

/// A readable artifact and its length.
pub struct Artifact {
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    pub len: u64,
}

/// What a store must do. Keys are relative paths like `apps/<id>/model.onnx`.
#[async_trait::async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Moves a staged file under `key`, replacing what was there.
    async fn commit(&self, staged: Staged, key: &str) -> io::Result<()>;
    async fn open(&self, key: &str) -> io::Result<Artifact>;
    async fn delete(&self, key: &str) -> io::Result<()>;
    /// Deletes every artifact whose key starts with `prefix/` (`apps/<id>`, `jobs/<id>`: all
    /// that was stored for one application or job, whatever its attempts uploaded). Nothing
    /// there is fine.
    async fn delete_all(&self, prefix: &str) -> io::Result<()>;
    /// The names directly under `prefix/` (files and directories) and how long ago each last
    /// changed, for the orphan sweep. Nothing there is an empty list.
    async fn children(&self, prefix: &str) -> io::Result<Vec<(String, std::time::Duration)>>;
    /// Every stored object's key and size in bytes, for the storage measurement.
    async fn sizes(&self) -> io::Result<Vec<(String, u64)>>;
    /// A directory on the local disk for staging uploads next to the store.
    fn staging_dir(&self) -> &Path;
}

/// The default store: files under `<data dir>/artifacts`.
pub struct LocalStore {
    root: PathBuf,
    staging: PathBuf,
}

impl LocalStore {
    pub fn new(data_dir: &Path) -> io::Result<Self> {
        let root = data_dir.join("artifacts");
        let staging = data_dir.join("staging");
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&staging)?;
        // Leftovers of uploads cut short by a crash.
        if let Ok(entries) = std::fs::read_dir(&staging) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self { root, staging })
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        // Keys are made by the server, but a bad one must never reach outside the root.
        if key.is_empty() || key.starts_with('/') || key.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad artifact key {key:?}")));
        }
        Ok(self.root.join(key))
    }
}

#[async_trait::async_trait]
impl ArtifactStore for LocalStore {
    async fn commit(&self, staged: Staged, key: &str) -> io::Result<()> {
        let dest = self.path(key)?;
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let from = staged.keep();
        tokio::fs::rename(&from, &dest).await
    }

    async fn open(&self, key: &str) -> io::Result<Artifact> {
        let file = tokio::fs::File::open(self.path(key)?).await?;
        let len = file.metadata().await?.len();
        Ok(Artifact { reader: Box::pin(file), len })
    }

    async fn delete(&self, key: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn delete_all(&self, prefix: &str) -> io::Result<()> {
        match tokio::fs::remove_dir_all(self.path(prefix)?).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn children(&self, prefix: &str) -> io::Result<Vec<(String, std::time::Duration)>> {
        let mut entries = match tokio::fs::read_dir(self.path(prefix)?).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let Ok(name) = entry.file_name().into_string() else { continue };
            let age = entry.metadata().await?.modified().ok().and_then(|m| m.elapsed().ok()).unwrap_or_default();
            out.push((name, age));
        }
        Ok(out)
    }

    async fn sizes(&self) -> io::Result<Vec<(String, u64)>> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || walk_sizes(&root)).await.map_err(io::Error::other)?
    }

    fn staging_dir(&self) -> &Path {
        &self.staging
    }
}

/// The files under `root`, as keys (`/`-separated paths relative to it) with their sizes.
fn walk_sizes(root: &Path) -> io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Removed since it was listed (retention, a deleted application): nothing to count.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if let Some(key) = entry.path().strip_prefix(root).ok().and_then(|p| p.to_str()) {
                out.push((key.replace(std::path::MAIN_SEPARATOR, "/"), meta.len()));
            }
        }
    }
    Ok(out)
}

/// An upload on local disk, not yet committed; removed when dropped uncommitted.
pub struct Staged {
    path: Option<PathBuf>,
    pub size: u64,
    pub sha256: String,
}

impl Staged {
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    fn keep(mut self) -> PathBuf {
        self.path.take().unwrap_or_default()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Why a staged upload failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the upload was cut short: {0}")]
    Body(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// An upload as received: small text kept in memory, anything else staged on disk.
pub enum Received {
    Inline { text: String, sha256: String },
    Staged(Staged),
}

impl Received {
    pub fn size(&self) -> u64 {
        match self {
            Received::Inline { text, .. } => text.len() as u64,
            Received::Staged(s) => s.size,
        }
    }

    pub fn sha256(&self) -> &str {
        match self {
            Received::Inline { sha256, .. } => sha256,
            Received::Staged(s) => &s.sha256,
        }
    }
}

/// Receives `body`: in memory while it is at most [`INLINE_MAX`] bytes of UTF-8, otherwise
/// [`stage`]d in `dir` (what came so far first). Refuses more than `limit` bytes.
pub async fn receive<S, E>(dir: &Path, mut body: S, limit: u64) -> Result<Received, StageError>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut head = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| StageError::Body(e.to_string()))?;
        if head.len() + chunk.len() > INLINE_MAX {
            let rest = futures_util::stream::iter([Ok(bytes::Bytes::from(head)), Ok(chunk)]).chain(body);
            return Ok(Received::Staged(stage(dir, rest, limit).await?));
        }
        head.extend_from_slice(&chunk);
    }
    if head.len() as u64 > limit {
        return Err(StageError::TooLarge { limit });
    }
    match String::from_utf8(head) {
        Ok(text) => Ok(Received::Inline { sha256: hex::encode(Sha256::digest(text.as_bytes())), text }),
        Err(e) => {
            let whole = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(bytes::Bytes::from(e.into_bytes()))]);
            Ok(Received::Staged(stage(dir, whole, limit).await?))
        }
    }
}

/// Streams `body` into a new file in `dir`, hashing it, refusing more than `limit` bytes.
pub async fn stage<S, E>(dir: &Path, mut body: S, limit: u64) -> Result<Staged, StageError>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let path = dir.join(format!("{}.part", uuid::Uuid::new_v4()));
    let mut staged = Staged { path: Some(path.clone()), size: 0, sha256: String::new() };
    let mut file = tokio::fs::File::create(&path).await?;
    let mut hasher = Sha256::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| StageError::Body(e.to_string()))?;
        staged.size += chunk.len() as u64;
        if staged.size > limit {
            return Err(StageError::TooLarge { limit });
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    file.sync_data().await?;
    staged.sha256 = hex::encode(hasher.finalize());
    Ok(staged)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncReadExt;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<bytes::Bytes, io::Error>> + Unpin {
        futures_util::stream::iter(parts.iter().map(|p| Ok(bytes::Bytes::from_static(p))).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn stage_commit_open_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let staged = stage(store.staging_dir(), chunks(&[b"hello ", b"world"]), 100).await.unwrap();
        assert_eq!(staged.size, 11);
        assert_eq!(staged.sha256, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        store.commit(staged, "apps/a/model.onnx").await.unwrap();
        let mut art = store.open("apps/a/model.onnx").await.unwrap();
        let mut text = String::new();
        art.reader.read_to_string(&mut text).await.unwrap();
        assert_eq!((text.as_str(), art.len), ("hello world", 11));
        store.delete("apps/a/model.onnx").await.unwrap();
        assert!(store.open("apps/a/model.onnx").await.is_err());
        // Staging is empty: the committed file moved out, nothing was left behind.
        assert_eq!(std::fs::read_dir(store.staging_dir()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn delete_all_takes_everything_under_a_prefix_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        for key in ["jobs/a/attempt-1/result.csv", "jobs/a/attempt-2/log.txt", "jobs/ab/attempt-1/result.csv"] {
            let staged = stage(store.staging_dir(), chunks(&[b"x"]), 10).await.unwrap();
            store.commit(staged, key).await.unwrap();
        }
        store.delete_all("jobs/a").await.unwrap();
        assert!(!dir.path().join("artifacts/jobs/a").exists());
        assert!(store.open("jobs/ab/attempt-1/result.csv").await.is_ok(), "a longer id with the same start stays");
        store.delete_all("jobs/a").await.unwrap();
        for prefix in ["..", "jobs/../..", ""] {
            assert!(store.delete_all(prefix).await.is_err(), "{prefix}");
        }
        assert!(dir.path().join("artifacts").exists());
    }

    #[tokio::test]
    async fn too_large_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let err = stage(store.staging_dir(), chunks(&[b"12345", b"67890"]), 8).await.err().unwrap();
        assert!(matches!(err, StageError::TooLarge { limit: 8 }));
        assert_eq!(std::fs::read_dir(store.staging_dir()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn small_text_stays_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let got = receive(store.staging_dir(), chunks(&[b"hello ", b"world"]), 100).await.unwrap();
        match got {
            Received::Inline { text, sha256 } => {
                assert_eq!(text, "hello world");
                assert_eq!(sha256, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
            }
            Received::Staged(_) => panic!("staged"),
        }
        assert_eq!(std::fs::read_dir(store.staging_dir()).unwrap().count(), 0);
        // Over the limit, even when small.
        assert!(matches!(receive(store.staging_dir(), chunks(&[b"12345", b"67890"]), 8).await, Err(StageError::TooLarge { limit: 8 })));
    }

    #[tokio::test]
    async fn large_or_binary_uploads_are_staged_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let big: &'static [u8] = Box::leak(vec![b'x'; INLINE_MAX].into_boxed_slice());
        let got = receive(store.staging_dir(), chunks(&[b"head,", big, b"tail"]), 1 << 20).await.unwrap();
        let Received::Staged(staged) = got else { panic!("kept in memory") };
        assert_eq!(staged.size, (INLINE_MAX + 9) as u64);
        let on_disk = std::fs::read(staged.path()).unwrap();
        assert!(on_disk.starts_with(b"head,x") && on_disk.ends_with(b"xtail"));
        assert_eq!(staged.sha256, hex::encode(Sha256::digest(&on_disk)));
        let got = receive(store.staging_dir(), chunks(&[b"\xff\xfe"]), 100).await.unwrap();
        assert!(matches!(got, Received::Staged(ref s) if s.size == 2));
    }

    #[tokio::test]
    async fn keys_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        for key in ["../x", "/etc/passwd", "a//b", "a/./b", ""] {
            assert!(store.open(key).await.is_err(), "{key}");
        }
    }
}
