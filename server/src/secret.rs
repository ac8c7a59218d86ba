//! The server's secret: 32 random bytes kept in a file only the server's user can read. Node
//! keys are derived from it (see `app::backend::nodes::NodeKeys`), so losing it revokes every
//! node, and servers that share a database must share it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context};
use rand::RngCore;

/// The secret in `path`, made on first use. Several replicas starting at once on a shared data
/// directory all end up with the same one: each writes a candidate aside and links it into
/// place (atomic, and refused when the file is there), and the losers read the winner's.
pub fn load_or_create(path: &Path) -> anyhow::Result<Vec<u8>> {
    match read(path) {
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) => {
            let mut bytes = vec![0u8; 32];
            rand::thread_rng().fill_bytes(&mut bytes);
            // Random (never from the secret: names are visible to all), not the pid: replicas in
            // containers may all be pid 1.
            let aside = path.with_extension(format!("new-{:016x}", rand::thread_rng().next_u64()));
            let written = (|| -> std::io::Result<()> {
                let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&aside)?;
                file.write_all(hex::encode(&bytes).as_bytes())?;
                file.sync_all()?;
                match std::fs::hard_link(&aside, path) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
                    _ => Ok(()),
                }
            })();
            let _ = std::fs::remove_file(&aside);
            written.with_context(|| format!("cannot create secret file {}", path.display()))?;
            // Ours, or the one another replica linked first.
            read(path)
        }
        other => other,
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    // The context keeps the io::Error reachable by downcast (NotFound above).
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read secret file {}", path.display()))?;
    let bytes = hex::decode(text.trim()).with_context(|| format!("secret file {} is not hex", path.display()))?;
    if bytes.len() < 16 {
        bail!("secret file {} is too short (want 32 random bytes, hex)", path.display());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_starting_at_once_share_one_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server-secret");
        let all: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| load_or_create(&path).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(all.iter().all(|b| b == &all[0] && b.len() == 32));
        assert_eq!(load_or_create(&path).unwrap(), all[0], "read back the next time");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no candidate left aside");
    }
}
