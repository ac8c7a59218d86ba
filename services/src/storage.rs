//! Storage used, per account and in all: every stored object (a file in the artifact store, or
//! an artifact kept in the database) is counted toward the account that owns it, found by the
//! key it is stored under. What no account owns (orphans the sweep has not removed yet, uploads
//! in progress) is counted apart, so the sum is everything stored.

use std::collections::HashMap;

use aiedge_store::artifacts::{ArtifactStore, INLINE_PREFIX};
use aiedge_store::storage::{self, Owners, Usage};
use aiedge_store::Db;

use crate::{Result, ServiceError};

/// Measures every account's storage now and records it for the admin page.
pub async fn measure(db: &Db, artifacts: &dyn ArtifactStore) -> Result<Vec<Usage>> {
    // Files first: a job created meanwhile has its owner in the owners read after, and a file
    // deleted meanwhile is counted once more, until the next measurement.
    let files = artifacts.sizes().await.map_err(|e| ServiceError::Storage(e.to_string()))?;
    let inline = storage::inline_sizes(db).await?;
    let owners = storage::owners(db).await?;
    let usage = tally(&owners, files.into_iter().chain(inline.into_iter().map(|(k, n)| (k, u64::try_from(n).unwrap_or(0)))));
    storage::record(db, &usage, aiedge_store::now_ms()).await?;
    Ok(usage)
}

/// Sums `objects` (key, bytes) per owner. Accounts with jobs but nothing stored still appear.
pub fn tally(owners: &Owners, objects: impl IntoIterator<Item = (String, u64)>) -> Vec<Usage> {
    let apps: HashMap<&str, &str> = owners.apps.iter().map(|(id, owner)| (id.as_str(), owner.as_str())).collect();
    let schedules: HashMap<&str, &str> = owners.schedules.iter().map(|(id, owner)| (id.as_str(), owner.as_str())).collect();
    let jobs: HashMap<&str, &str> = owners.jobs.iter().map(|(id, owner, _)| (id.as_str(), owner.as_str())).collect();
    let inputs: HashMap<&str, &str> = owners.jobs.iter().map(|(_, owner, input)| (input.as_str(), owner.as_str())).collect();

    let mut by_owner: HashMap<&str, Usage> = HashMap::new();
    for (_, owner, _) in &owners.jobs {
        by_owner.entry(owner).or_insert_with(|| Usage { owner_id: owner.clone(), ..Usage::default() }).jobs += 1;
    }
    for (key, bytes) in objects {
        let bare = key.strip_prefix(INLINE_PREFIX).unwrap_or(&key);
        let mut parts = bare.splitn(3, '/');
        let by_prefix = match (parts.next(), parts.next()) {
            (Some("apps"), Some(id)) => apps.get(id),
            (Some("jobs"), Some(id)) => jobs.get(id),
            (Some("schedules"), Some(id)) => schedules.get(id),
            _ => None,
        };
        let owner = by_prefix.or_else(|| inputs.get(key.as_str())).copied().unwrap_or("");
        let usage = by_owner.entry(owner).or_insert_with(|| Usage { owner_id: owner.to_string(), ..Usage::default() });
        usage.bytes = usage.bytes.saturating_add(i64::try_from(bytes).unwrap_or(i64::MAX));
        usage.objects += 1;
    }
    let mut out: Vec<Usage> = by_owner.into_values().collect();
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.owner_id.cmp(&b.owner_id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> String {
        x.to_string()
    }

    #[test]
    fn objects_count_toward_their_owner_by_key() {
        let owners = Owners {
            apps: vec![(s("a1"), s("ann")), (s("a2"), s("bob"))],
            jobs: vec![
                (s("j1"), s("ann"), s("inputs/x.csv")),
                (s("j2"), s("bob"), s("inline:inputs/y.csv")),
                (s("j3"), s("bob"), s("apps/a2/default-input.csv")),
            ],
            schedules: vec![(s("s1"), s("ann"))],
        };
        let objects = vec![
            (s("apps/a1/model.onnx"), 1000),
            (s("apps/a2/model.onnx"), 10),
            (s("apps/a2/default-input.csv"), 5),
            (s("inputs/x.csv"), 200),
            (s("inline:inputs/y.csv"), 7),
            (s("jobs/j1/attempt-1/result.csv"), 300),
            (s("inline:jobs/j2/attempt-1/result.csv"), 3),
            (s("schedules/s1/input.csv"), 40),
            (s("inputs/orphan.csv"), 9),
            (s("jobs/gone/attempt-1/result.csv"), 1),
        ];
        let usage = tally(&owners, objects);
        let find = |owner: &str| usage.iter().find(|u| u.owner_id == owner).cloned().unwrap();
        assert_eq!(find("ann"), Usage { owner_id: s("ann"), bytes: 1540, objects: 4, jobs: 1 });
        assert_eq!(find("bob"), Usage { owner_id: s("bob"), bytes: 25, objects: 4, jobs: 2 });
        assert_eq!(find(""), Usage { owner_id: s(""), bytes: 10, objects: 2, jobs: 0 });
        assert_eq!(usage[0].owner_id, "ann", "largest first");
        assert_eq!(usage.iter().map(|u| u.bytes).sum::<i64>(), 1575, "everything stored is counted once");
    }
}
