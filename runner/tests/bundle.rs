//! Script bundle checks against zips built here with the zip crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use runner::bundle::{extract, inspect, BundleError, BundleLimits, Manifest};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

const MANIFEST: &str = r#"
entry = "python3 predict.py"
runtime = "python3"
output = "predictions.csv"
time_limit_secs = 60
"#;

fn options() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
}

/// Writes a zip of `(name, contents)` files into `dir`.
fn make_zip(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    let path = dir.join("bundle.zip");
    let mut zip = ZipWriter::new(File::create(&path).unwrap());
    for (name, contents) in files {
        zip.start_file(*name, options()).unwrap();
        zip.write_all(contents).unwrap();
    }
    zip.finish().unwrap();
    path
}

fn with_manifest<'a>(extra: &[(&'a str, &'a [u8])]) -> Vec<(&'a str, &'a [u8])> {
    let mut files = vec![("aiedge.toml", MANIFEST.as_bytes())];
    files.extend_from_slice(extra);
    files
}

fn empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

/// Both `inspect` and `extract` refuse the zip; `extract` leaves `dest` empty.
fn refused(zip: &Path) -> (BundleError, BundleError) {
    let limits = BundleLimits::default();
    let by_inspect = inspect(zip, &limits).expect_err("inspect accepted it");
    let dest = tempfile::tempdir().unwrap();
    let by_extract = extract(zip, dest.path(), &limits).expect_err("extract accepted it");
    assert!(empty_dir(dest.path()), "extract left files behind");
    (by_inspect, by_extract)
}

#[test]
fn valid_bundle_is_inspected_and_extracted() {
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("bundle.zip");
    let mut zip = ZipWriter::new(File::create(&zip_path).unwrap());
    zip.start_file("aiedge.toml", options()).unwrap();
    zip.write_all(MANIFEST.as_bytes()).unwrap();
    zip.add_directory("lib/", options()).unwrap();
    zip.start_file("lib/helper.py", options()).unwrap();
    zip.write_all(b"X = 1\n").unwrap();
    zip.start_file("./predict.py", options().unix_permissions(0o755)).unwrap();
    zip.write_all(b"print('hi')\n").unwrap();
    zip.finish().unwrap();

    let manifest = inspect(&zip_path, &BundleLimits::default()).unwrap();
    assert_eq!(
        manifest,
        Manifest {
            entry: "python3 predict.py".into(),
            runtime: "python3".into(),
            output: "predictions.csv".into(),
            time_limit_secs: 60,
            memory_mb: 1024,
        }
    );
    assert_eq!(manifest.argv(), ["python3", "predict.py"]);

    let dest = dir.path().join("work");
    std::fs::create_dir(&dest).unwrap();
    assert_eq!(extract(&zip_path, &dest, &BundleLimits::default()).unwrap(), manifest);
    assert_eq!(std::fs::read_to_string(dest.join("predict.py")).unwrap(), "print('hi')\n");
    assert_eq!(std::fs::read_to_string(dest.join("lib/helper.py")).unwrap(), "X = 1\n");
    assert_eq!(std::fs::read_to_string(dest.join("aiedge.toml")).unwrap(), MANIFEST);

    // A second extraction into the same (now full) directory is refused.
    assert!(matches!(extract(&zip_path, &dest, &BundleLimits::default()), Err(BundleError::DestinationNotEmpty(_))));
}

#[test]
fn parent_directory_entry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let zip = make_zip(dir.path(), &with_manifest(&[("../evil", b"x")]));
    let (a, b) = refused(&zip);
    assert_eq!(a.to_string(), "entry `../evil` escapes the bundle");
    assert!(matches!(b, BundleError::Escapes(_)));
    assert!(!dir.path().parent().unwrap().join("evil").exists());

    let zip = make_zip(dir.path(), &with_manifest(&[("a/../../evil", b"x")]));
    assert!(matches!(refused(&zip).0, BundleError::Escapes(_)));
}

#[test]
fn absolute_and_backslash_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let zip = make_zip(dir.path(), &with_manifest(&[("/etc/x", b"x")]));
    let (a, b) = refused(&zip);
    assert_eq!(a.to_string(), "entry `/etc/x` is an absolute path");
    assert!(matches!(b, BundleError::AbsolutePath(_)));

    let zip = make_zip(dir.path(), &with_manifest(&[("..\\evil", b"x")]));
    let (a, _) = refused(&zip);
    assert_eq!(a.to_string(), "entry `..\\evil` has an invalid name: it contains a backslash");
}

#[test]
fn symlink_entry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("bundle.zip");
    let mut zip = ZipWriter::new(File::create(&zip_path).unwrap());
    zip.start_file("aiedge.toml", options()).unwrap();
    zip.write_all(MANIFEST.as_bytes()).unwrap();
    zip.add_symlink("link", "/etc/passwd", options()).unwrap();
    zip.finish().unwrap();
    let (a, b) = refused(&zip_path);
    assert_eq!(a.to_string(), "entry `link` is a symbolic link; links are not allowed");
    assert!(matches!(b, BundleError::Symlink(_)));
}

#[test]
fn too_many_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..1000).map(|i| format!("f{i}.txt")).collect();
    let mut files = with_manifest(&[]);
    files.extend(names.iter().map(|n| (n.as_str(), b"" as &[u8])));
    let zip = make_zip(dir.path(), &files);
    let (a, b) = refused(&zip);
    assert_eq!(a.to_string(), "too many entries (1001 > 1000)");
    assert!(matches!(b, BundleError::TooManyEntries { count: 1001, max: 1000 }));
    // One fewer is fine.
    let limits = BundleLimits { max_entries: 1001, ..BundleLimits::default() };
    inspect(&zip, &limits).unwrap();
}

/// A zip with the manifest and 300 MiB of zeros, written streaming (a few hundred KiB on disk).
fn zero_bomb(dir: &Path) -> PathBuf {
    let path = dir.join("bomb.zip");
    let mut zip = ZipWriter::new(File::create(&path).unwrap());
    zip.start_file("aiedge.toml", options()).unwrap();
    zip.write_all(MANIFEST.as_bytes()).unwrap();
    zip.start_file("zeros.bin", options().compression_level(Some(1))).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..300 {
        zip.write_all(&chunk).unwrap();
    }
    zip.finish().unwrap();
    path
}

/// Rewrites the uncompressed size of `name` in its local and central headers.
fn lie_about_size(zip: &Path, name: &str, size: u32) {
    let mut bytes = std::fs::read(zip).unwrap();
    let (mut local, mut central) = (0, 0);
    for i in 0..bytes.len().saturating_sub(46 + name.len()) {
        if bytes[i..].starts_with(b"PK\x03\x04") && bytes[i + 30..].starts_with(name.as_bytes()) {
            bytes[i + 22..i + 26].copy_from_slice(&size.to_le_bytes());
            local += 1;
        }
        if bytes[i..].starts_with(b"PK\x01\x02") && bytes[i + 46..].starts_with(name.as_bytes()) {
            bytes[i + 24..i + 28].copy_from_slice(&size.to_le_bytes());
            central += 1;
        }
    }
    assert_eq!((local, central), (1, 1), "headers of {name} not found");
    std::fs::write(zip, bytes).unwrap();
}

#[test]
fn zip_bombs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let zip = zero_bomb(dir.path());
    assert!(std::fs::metadata(&zip).unwrap().len() < 16 << 20);

    // Honest headers: refused from the declared sizes, before anything is decompressed.
    let (a, b) = refused(&zip);
    assert_eq!(a.to_string(), "uncompressed size exceeds 256 MiB");
    assert!(matches!(b, BundleError::TooLarge { .. }));

    // Headers that say 1 KiB: the real bytes are counted and the read stops right after 1 KiB,
    // so the refusal is quick and extract writes at most what was declared.
    lie_about_size(&zip, "zeros.bin", 1024);
    let started = Instant::now();
    let (a, b) = refused(&zip);
    assert_eq!(a.to_string(), "entry `zeros.bin` does not match the size in its header");
    assert!(matches!(b, BundleError::SizeMismatch(_)));
    assert!(started.elapsed().as_secs() < 5, "decompressed far too much");

    // Headers under a small limit still count the real bytes.
    let limits = BundleLimits { max_entries: 10, max_uncompressed_bytes: 512 };
    assert!(matches!(inspect(&zip, &limits), Err(BundleError::TooLarge { limit: 512 })));
}

#[test]
fn missing_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let zip = make_zip(dir.path(), &[("predict.py", b"print(1)"), ("sub/aiedge.toml", MANIFEST.as_bytes())]);
    let (a, _) = refused(&zip);
    assert_eq!(a.to_string(), "missing aiedge.toml at the bundle root");
}

#[test]
fn bad_manifests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("entry = \"ruby x.rb\"\nruntime = \"ruby\"\noutput = \"o.csv\"\n", "aiedge.toml: unknown runtime `ruby` (known: python3, sh)"),
        (
            "entry = \"sh run.sh\"\nruntime = \"sh\"\noutput = \"../o.csv\"\n",
            "aiedge.toml: output must be a relative path inside the bundle",
        ),
        (
            "entry = \"sh run.sh\"\nruntime = \"sh\"\noutput = \"/tmp/o.csv\"\n",
            "aiedge.toml: output must be a relative path inside the bundle",
        ),
        ("entry = \"sh run.sh\"\nruntime = \"sh\"\n", "aiedge.toml: missing field `output`"),
        (
            "entry = \"sh run.sh\"\nruntime = \"sh\"\noutput = \"o.csv\"\nmemory_mb = \"lots\"\n",
            "aiedge.toml: invalid type: string \"lots\", expected u64",
        ),
    ];
    for (text, message) in cases {
        let zip = make_zip(dir.path(), &[("aiedge.toml", text.as_bytes())]);
        let (a, b) = refused(&zip);
        assert_eq!(a.to_string(), message);
        assert_eq!(b.to_string(), message);
    }
    // Not TOML at all.
    let zip = make_zip(dir.path(), &[("aiedge.toml", b"entry = [unclosed")]);
    let (a, _) = refused(&zip);
    assert!(matches!(a, BundleError::Manifest(_)), "{a}");
    assert!(a.to_string().starts_with("aiedge.toml: "), "{a}");
}

#[test]
fn not_a_zip_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.zip");
    std::fs::write(&path, b"definitely not a zip file, just some text").unwrap();
    let (a, _) = refused(&path);
    assert_eq!(a.to_string(), "not a zip file");
}

#[test]
fn duplicate_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let zip = make_zip(dir.path(), &with_manifest(&[("a.py", b"1"), ("./a.py", b"2")]));
    assert!(matches!(refused(&zip).0, BundleError::Duplicate(_)));
}
