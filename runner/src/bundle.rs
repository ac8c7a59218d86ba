//! Script bundles: a zip with an [`aiedge.toml`](MANIFEST_NAME) manifest at its root.
//!
//! The server calls [`inspect`] when a bundle is uploaded and the agent calls [`extract`] before a
//! run, so both refuse the same things: names that leave the bundle (absolute paths, `..`,
//! backslashes), links and other special files, too many entries, zip bombs (the declared sizes
//! are summed up front and every entry's real decompressed size must match its header, counted
//! while reading), and a missing or invalid [`Manifest`].
//!
//! Nothing here trusts the zip headers for safety: a header that lies about its size is caught at
//! the first byte past what it declared, so at most the declared total (itself under the limit) is
//! ever decompressed or written.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zip::ZipArchive;

/// Name of the manifest, at the root of every bundle.
pub const MANIFEST_NAME: &str = "aiedge.toml";

/// Runtimes a manifest may name; the agent reports which it has (e.g. "python3").
pub const KNOWN_RUNTIMES: &[&str] = &["python3", "sh"];

/// Largest manifest we read; a real one is a few hundred bytes.
const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
const MIB: u64 = 1024 * 1024;
/// Accepted range of [`Manifest::time_limit_secs`].
pub const TIME_LIMIT_RANGE: std::ops::RangeInclusive<u64> = 1..=86_400;
/// Accepted range of [`Manifest::memory_mb`]: below 16 MiB not even an interpreter starts.
pub const MEMORY_MB_RANGE: std::ops::RangeInclusive<u64> = 16..=1_048_576;

/// The `aiedge.toml` of a bundle. Unknown keys are refused, so a typo such as `time_limit` is an
/// error at upload instead of a silently ignored limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Command line, split on whitespace (no shell), e.g. "python3 predict.py". First word must be
    /// the runtime.
    pub entry: String,
    /// One of [`KNOWN_RUNTIMES`].
    pub runtime: String,
    /// Relative path (inside the work dir) of the file the script writes, e.g. "predictions.csv".
    pub output: String,
    /// Wall-clock limit in seconds (1..=86400), default 300.
    #[serde(default = "default_time_limit_secs")]
    pub time_limit_secs: u64,
    /// Memory (address space) limit in MiB (16..=1048576), default 1024.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
}

fn default_time_limit_secs() -> u64 {
    300
}

fn default_memory_mb() -> u64 {
    1024
}

impl Manifest {
    /// Parses and validates the text of an `aiedge.toml`.
    pub fn parse(text: &str) -> Result<Manifest, BundleError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| BundleError::Manifest(e.message().to_owned()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The command line as the sandbox runs it: `entry` split on whitespace.
    pub fn argv(&self) -> Vec<String> {
        self.entry.split_whitespace().map(str::to_owned).collect()
    }

    fn validate(&self) -> Result<(), BundleError> {
        let bad = |msg: String| Err(BundleError::Manifest(msg));
        if !KNOWN_RUNTIMES.contains(&self.runtime.as_str()) {
            return bad(format!("unknown runtime `{}` (known: {})", self.runtime, KNOWN_RUNTIMES.join(", ")));
        }
        match self.entry.split_whitespace().next() {
            None => return bad("entry is empty".to_owned()),
            Some(first) if first != self.runtime => {
                return bad(format!("entry must start with the runtime `{}`, not `{first}`", self.runtime))
            }
            Some(_) => {}
        }
        if normalize_relative(&self.output).is_err() {
            return bad("output must be a relative path inside the bundle".to_owned());
        }
        if !TIME_LIMIT_RANGE.contains(&self.time_limit_secs) {
            return bad(format!(
                "time_limit_secs must be between {} and {}, not {}",
                TIME_LIMIT_RANGE.start(),
                TIME_LIMIT_RANGE.end(),
                self.time_limit_secs
            ));
        }
        if !MEMORY_MB_RANGE.contains(&self.memory_mb) {
            return bad(format!(
                "memory_mb must be between {} and {}, not {}",
                MEMORY_MB_RANGE.start(),
                MEMORY_MB_RANGE.end(),
                self.memory_mb
            ));
        }
        Ok(())
    }
}

/// What a bundle may hold.
#[derive(Debug, Clone, Copy)]
pub struct BundleLimits {
    /// Most entries (files and directories) in the zip.
    pub max_entries: usize,
    /// Most bytes all files decompress to, together.
    pub max_uncompressed_bytes: u64,
}

impl Default for BundleLimits {
    /// 1000 entries, 256 MiB.
    fn default() -> Self {
        BundleLimits { max_entries: 1000, max_uncompressed_bytes: 256 * MIB }
    }
}

/// Why a bundle was refused. The messages are meant for the person who uploaded it.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a zip file")]
    NotZip,
    #[error("invalid zip: {0}")]
    Corrupt(String),
    #[error("entry `{0}` escapes the bundle")]
    Escapes(String),
    #[error("entry `{0}` is an absolute path")]
    AbsolutePath(String),
    /// Backslashes, NUL bytes, empty names: anything another unzip could read differently.
    #[error("entry `{name}` has an invalid name: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("entry `{0}` is a symbolic link; links are not allowed")]
    Symlink(String),
    #[error("entry `{0}` is not a regular file or directory")]
    SpecialFile(String),
    #[error("entry `{0}` appears more than once")]
    Duplicate(String),
    #[error("entry `{entry}` is inside `{file}`, which is a file")]
    UnderFile { entry: String, file: String },
    #[error("entry `{0}` is encrypted; encrypted bundles are not supported")]
    Encrypted(String),
    #[error("too many entries ({count} > {max})")]
    TooManyEntries { count: usize, max: usize },
    #[error("uncompressed size exceeds {}", human_bytes(*limit))]
    TooLarge { limit: u64 },
    /// The header of an entry lies about (or its data disagrees with) its size: a bomb or damage.
    #[error("entry `{0}` does not match the size in its header")]
    SizeMismatch(String),
    #[error("missing {MANIFEST_NAME} at the bundle root")]
    MissingManifest,
    #[error("{MANIFEST_NAME}: {0}")]
    Manifest(String),
    #[error("destination `{}` is not an empty directory", .0.display())]
    DestinationNotEmpty(PathBuf),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

fn human_bytes(n: u64) -> String {
    if n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else {
        format!("{n} bytes")
    }
}

/// Validates without extracting (server side, at upload): every entry's name, type and size,
/// decompressing everything to count the real bytes, and the manifest. Returns the manifest.
pub fn inspect(path: &Path, limits: &BundleLimits) -> Result<Manifest, BundleError> {
    let mut archive = open(path)?;
    let plan = plan(&mut archive, limits)?;
    let mut budget = Budget::new(limits.max_uncompressed_bytes);
    for entry in plan.entries.iter().filter(|e| !e.is_dir) {
        copy_entry(&mut archive, entry, &mut io::sink(), &mut budget)?;
    }
    Ok(plan.manifest)
}

/// Extracts into `dest` (must exist and be empty) with the same checks, enforced while writing:
/// nothing is written past an entry's declared size or the total limit. On error `dest` is emptied
/// again. Files get mode 0644 (0755 if the zip marks them executable), directories 0755.
/// Returns the manifest.
pub fn extract(path: &Path, dest: &Path, limits: &BundleLimits) -> Result<Manifest, BundleError> {
    if !dest.is_dir() || std::fs::read_dir(dest)?.next().is_some() {
        return Err(BundleError::DestinationNotEmpty(dest.to_path_buf()));
    }
    let result = extract_into(path, dest, limits);
    if result.is_err() {
        // Best effort: a half-extracted bundle must not be run by mistake.
        if let Ok(children) = std::fs::read_dir(dest) {
            for child in children.flatten() {
                let p = child.path();
                let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            }
        }
    }
    result
}

fn extract_into(path: &Path, dest: &Path, limits: &BundleLimits) -> Result<Manifest, BundleError> {
    let mut archive = open(path)?;
    let plan = plan(&mut archive, limits)?;
    let mut budget = Budget::new(limits.max_uncompressed_bytes);
    // Directories first (sorted, so parents come before children), then the files.
    for dir in plan.entries.iter().filter(|e| e.is_dir) {
        std::fs::create_dir_all(dest.join(&dir.path))?;
    }
    for entry in plan.entries.iter().filter(|e| !e.is_dir) {
        let target = dest.join(&entry.path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // IMPORTANT: create_new (O_EXCL) never follows or overwrites anything already there.
        let mut file = OpenOptions::new().write(true).create_new(true).mode(if entry.executable { 0o755 } else { 0o644 }).open(&target)?;
        copy_entry(&mut archive, entry, &mut file, &mut budget)?;
        file.sync_all()?;
    }
    Ok(plan.manifest)
}

type Archive = ZipArchive<BufReader<File>>;

fn open(path: &Path) -> Result<Archive, BundleError> {
    let file = File::open(path)?;
    ZipArchive::new(BufReader::new(file)).map_err(|e| match e {
        zip::result::ZipError::Io(io) => BundleError::Io(io),
        _ => BundleError::NotZip,
    })
}

/// One checked entry: where it goes and what its header promises.
#[derive(Debug)]
struct PlannedEntry {
    index: usize,
    /// As written in the zip, for messages.
    name: String,
    /// Normalized, relative, without `.` or empty components.
    path: PathBuf,
    is_dir: bool,
    declared_size: u64,
    executable: bool,
}

struct Plan {
    entries: Vec<PlannedEntry>,
    manifest: Manifest,
}

/// Checks everything the central directory says (names, types, count, declared sizes), then reads
/// and parses the manifest. Nothing but the manifest is decompressed here.
fn plan(archive: &mut Archive, limits: &BundleLimits) -> Result<Plan, BundleError> {
    if archive.len() > limits.max_entries {
        return Err(BundleError::TooManyEntries { count: archive.len(), max: limits.max_entries });
    }
    let mut entries = Vec::with_capacity(archive.len());
    let mut seen = HashSet::new();
    let mut declared_total: u64 = 0;
    for index in 0..archive.len() {
        let file = archive.by_index_raw(index).map_err(zip_error)?;
        let name = file.name().to_owned();
        if file.encrypted() {
            return Err(BundleError::Encrypted(name));
        }
        let path = check_name(&name)?;
        let mode = file.unix_mode().unwrap_or(0);
        let is_dir = match mode & 0o170000 {
            0o120000 => return Err(BundleError::Symlink(name)),
            0 | 0o100000 => file.is_dir(),
            0o040000 => true,
            _ => return Err(BundleError::SpecialFile(name)),
        };
        if is_dir && file.size() != 0 {
            return Err(BundleError::SizeMismatch(name));
        }
        if !seen.insert(path.clone()) {
            return Err(BundleError::Duplicate(name));
        }
        declared_total = declared_total.saturating_add(file.size());
        if declared_total > limits.max_uncompressed_bytes {
            return Err(BundleError::TooLarge { limit: limits.max_uncompressed_bytes });
        }
        entries.push(PlannedEntry { index, name, path, is_dir, declared_size: file.size(), executable: mode & 0o111 != 0 });
    }
    // A file `a` and an entry `a/b` cannot both be extracted; say so instead of failing halfway.
    let files: BTreeMap<&Path, &str> = entries.iter().filter(|e| !e.is_dir).map(|e| (e.path.as_path(), e.name.as_str())).collect();
    for entry in &entries {
        for ancestor in entry.path.ancestors().skip(1) {
            if let Some(file) = files.get(ancestor) {
                return Err(BundleError::UnderFile { entry: entry.name.clone(), file: (*file).to_owned() });
            }
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));

    let manifest_entry = entries.iter().find(|e| !e.is_dir && e.path == Path::new(MANIFEST_NAME)).ok_or(BundleError::MissingManifest)?;
    if manifest_entry.declared_size > MAX_MANIFEST_BYTES {
        return Err(BundleError::Manifest(format!("too large ({} bytes, at most {MAX_MANIFEST_BYTES})", manifest_entry.declared_size)));
    }
    let mut text = Vec::new();
    let mut manifest_budget = Budget::new(MAX_MANIFEST_BYTES);
    copy_entry(archive, manifest_entry, &mut text, &mut manifest_budget)?;
    let text = String::from_utf8(text).map_err(|_| BundleError::Manifest("not valid UTF-8".to_owned()))?;
    let manifest = Manifest::parse(&text)?;
    Ok(Plan { entries, manifest })
}

/// Bytes still allowed to be decompressed, across entries.
struct Budget {
    remaining: u64,
    limit: u64,
}

impl Budget {
    fn new(limit: u64) -> Self {
        Budget { remaining: limit, limit }
    }
}

/// Decompresses one entry into `out`, writing at most its declared size and at most `budget`
/// bytes, then checks the data ends exactly there (the zip crate also checks the CRC at the end).
fn copy_entry(archive: &mut Archive, entry: &PlannedEntry, out: &mut dyn Write, budget: &mut Budget) -> Result<(), BundleError> {
    let mut file = archive.by_index(entry.index).map_err(zip_error)?;
    let allowed = entry.declared_size.min(budget.remaining);
    let copied = io::copy(&mut (&mut file).take(allowed), out).map_err(read_error)?;
    budget.remaining -= copied;
    if copied < entry.declared_size {
        // Either we hit the total budget (only possible if the plan's sum was bypassed), or the
        // data is shorter than declared.
        return Err(if allowed < entry.declared_size {
            BundleError::TooLarge { limit: budget.limit }
        } else {
            BundleError::SizeMismatch(entry.name.clone())
        });
    }
    // One more byte means the header lied; reading to EOF also makes the crate verify the CRC.
    let mut probe = [0u8; 1];
    match file.read(&mut probe).map_err(read_error)? {
        0 => Ok(()),
        _ => Err(BundleError::SizeMismatch(entry.name.clone())),
    }
}

fn zip_error(e: zip::result::ZipError) -> BundleError {
    match e {
        zip::result::ZipError::Io(io) => BundleError::Io(io),
        other => BundleError::Corrupt(other.to_string()),
    }
}

/// Errors while decompressing are damage (bad deflate data, bad CRC), not local I/O trouble.
fn read_error(e: io::Error) -> BundleError {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => BundleError::Corrupt(e.to_string()),
        _ => BundleError::Io(e),
    }
}

/// Turns an entry name into a safe relative path, or says why it is not one.
fn check_name(name: &str) -> Result<PathBuf, BundleError> {
    let invalid = |reason| BundleError::InvalidName { name: name.to_owned(), reason };
    if name.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    if name.contains('\\') {
        // Windows unzips read `..\evil` as `../evil`; refuse rather than guess.
        return Err(invalid("it contains a backslash"));
    }
    if name.starts_with('/') || has_drive_prefix(name) {
        return Err(BundleError::AbsolutePath(name.to_owned()));
    }
    normalize_relative(name).map_err(|e| match e {
        NameProblem::Escapes => BundleError::Escapes(name.to_owned()),
        NameProblem::Absolute => BundleError::AbsolutePath(name.to_owned()),
        NameProblem::Empty => invalid("it is empty"),
    })
}

fn has_drive_prefix(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

enum NameProblem {
    Escapes,
    Absolute,
    Empty,
}

/// `a/./b//c` -> `a/b/c`; refuses absolute paths, `..` anywhere and names that are only dots.
fn normalize_relative(name: &str) -> Result<PathBuf, NameProblem> {
    if name.starts_with('/') || name.contains('\\') || name.contains('\0') || has_drive_prefix(name) {
        return Err(NameProblem::Absolute);
    }
    let mut path = PathBuf::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(NameProblem::Escapes),
            other => path.push(other),
        }
    }
    if path.as_os_str().is_empty() {
        return Err(NameProblem::Empty);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(check_name("a/./b//c").unwrap(), PathBuf::from("a/b/c"));
        assert!(matches!(check_name("a/../../x"), Err(BundleError::Escapes(_))));
        assert!(matches!(check_name("/etc/x"), Err(BundleError::AbsolutePath(_))));
        assert!(matches!(check_name("C:/x"), Err(BundleError::AbsolutePath(_))));
        assert!(matches!(check_name("..\\x"), Err(BundleError::InvalidName { .. })));
        assert!(matches!(check_name("./"), Err(BundleError::InvalidName { .. })));
    }

    #[test]
    fn manifest_defaults_and_argv() {
        let m = Manifest::parse("entry = \"python3  predict.py --fast\"\nruntime = \"python3\"\noutput = \"out/p.csv\"\n").unwrap();
        assert_eq!(m.time_limit_secs, 300);
        assert_eq!(m.memory_mb, 1024);
        assert_eq!(m.argv(), ["python3", "predict.py", "--fast"]);
    }

    #[test]
    fn manifest_refusals() {
        let err = |t: &str| Manifest::parse(t).unwrap_err().to_string();
        let base = "runtime = \"python3\"\noutput = \"o.csv\"\n";
        assert_eq!(err(&format!("entry = \"sh run.sh\"\n{base}")), "aiedge.toml: entry must start with the runtime `python3`, not `sh`");
        assert!(
            err(&format!("entry = \"python3 a.py\"\n{base}time_limit_secs = 0\n")).contains("time_limit_secs must be between 1 and 86400")
        );
        assert!(err(&format!("entry = \"python3 a.py\"\n{base}time_limit = 5\n")).contains("unknown field `time_limit`"));
    }
}
