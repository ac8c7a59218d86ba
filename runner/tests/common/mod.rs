//! Helpers the runner's test files share.

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The cells of a CSV text, header row included.
pub fn records(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}
