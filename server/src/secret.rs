//! The server's secret: 32 random bytes kept in a file only the server's user can read. Node
//! keys are derived from it (see `app::backend::nodes::NodeKeys`), so losing it revokes every
//! node, and servers that share a database must share it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context};
use rand::RngCore;

pub fn load_or_create(path: &Path) -> anyhow::Result<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim()).with_context(|| format!("secret file {} is not hex", path.display()))?;
            if bytes.len() < 16 {
                bail!("secret file {} is too short (want 32 random bytes, hex)", path.display());
            }
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = vec![0u8; 32];
            rand::thread_rng().fill_bytes(&mut bytes);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create secret file {}", path.display()))?;
            file.write_all(hex::encode(&bytes).as_bytes())?;
            Ok(bytes)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read secret file {}", path.display())),
    }
}
