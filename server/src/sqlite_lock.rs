//! One server per SQLite database. The dispatcher, the dead-node sweep and the roll-ups run in
//! every server process as if it were alone, and SQLite has one writer: a second server on the
//! same file would dispatch, sweep and count beside the first. So a server on SQLite holds an
//! exclusive lock on `<database>.server-lock` while it runs, and a second is refused with a
//! line that says what to do. The kernel's `flock` goes with the process however it ends (even
//! SIGKILL), so a crash leaves no stale lock. Tools (`migrate`, `admin create`) do not take it:
//! they are meant to run beside a server. On PostgreSQL there is no lock here.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Held while the server runs; dropping it releases the lock.
pub struct ServerLock {
    _lock: Flock<File>,
}

/// The SQLite file of `url`, or `None` for PostgreSQL and in-memory databases.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// Takes the lock of the SQLite database at `url` (nothing for PostgreSQL), or explains who
/// holds it.
pub fn acquire(url: &str) -> anyhow::Result<Option<ServerLock>> {
    let Some(db) = sqlite_file(url) else { return Ok(None) };
    let mut path = db.clone().into_os_string();
    path.push(".server-lock");
    let path = PathBuf::from(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the server lock {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            // Who holds it, for the message a second server prints.
            let _ = lock.set_len(0).and_then(|()| lock.rewind()).and_then(|()| write!(lock, "{}", std::process::id()));
            Ok(Some(ServerLock { _lock: lock }))
        }
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() { "another server".to_string() } else { format!("another server (pid {holder})") };
            bail!(
                "{who} is serving the SQLite database {}: SQLite takes one server. Stop it first, or run several servers on PostgreSQL (--database-url postgres://…)",
                db.display()
            )
        }
        Err((_, e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sqlite_files_are_locked() {
        assert_eq!(sqlite_file("sqlite:///var/lib/aiedge/aiedge.db"), Some(PathBuf::from("/var/lib/aiedge/aiedge.db")));
        assert_eq!(sqlite_file("sqlite:data/x.db?mode=rwc"), Some(PathBuf::from("data/x.db")));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
    }

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let first = acquire(&url).unwrap().unwrap();
        let refused = acquire(&url).err().unwrap().to_string();
        assert!(refused.contains(&format!("pid {}", std::process::id())) && refused.contains("PostgreSQL"), "{refused}");
        drop(first);
        assert!(acquire(&url).unwrap().is_some());
    }
}
