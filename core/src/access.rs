//! Who may act on what, and which nodes may run whose jobs. Written once: every service and
//! the balancer ask here.

use crate::views::UserView;
use crate::{Pool, Sharing};

/// Whether `user` may see and change a resource owned by `owner_id`: its owner or an admin.
/// A resource the caller may not manage is answered as missing, so its existence is not told.
pub fn may_manage(user: &UserView, owner_id: &str) -> bool {
    user.id == owner_id || user.is_admin()
}

/// Who a node belongs to and whom its owner shares it with.
#[derive(Clone, Copy, Debug)]
pub struct NodeAccess<'a> {
    pub owner_id: &'a str,
    pub sharing: Sharing,
    /// The users named for it (used when `sharing` is [`Sharing::Users`]).
    pub shared_with: &'a [String],
}

/// Whether a node may run a job of `job_owner` who chose `pool`: always on the owner's own
/// nodes; on someone else's only if its owner shares it with them and the job may leave its
/// owner's machines. Otherwise, why not (a node outside the job's pool is not shown to the
/// job's owner at all, so the reason is for logs and tests).
pub fn may_run(node: NodeAccess<'_>, job_owner: &str, pool: Pool) -> Result<(), &'static str> {
    if node.owner_id == job_owner {
        return Ok(());
    }
    if pool == Pool::Own {
        return Err("the job stays on its owner's nodes");
    }
    match node.sharing {
        Sharing::Everyone => Ok(()),
        Sharing::Users if node.shared_with.iter().any(|u| u == job_owner) => Ok(()),
        Sharing::Users => Err("not shared with the job's owner"),
        Sharing::Private => Err("private to its owner"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    #[test]
    fn a_node_runs_its_owners_jobs_and_whom_it_is_shared_with() {
        let named = ["bob".to_string()];
        let node = |sharing| NodeAccess { owner_id: "alice", sharing, shared_with: &named };
        for sharing in Sharing::ALL {
            for pool in Pool::ALL {
                assert!(may_run(node(*sharing), "alice", *pool).is_ok(), "the owner's own node, {sharing}, {pool}");
                assert!(may_run(node(*sharing), "bob", Pool::Own).is_err(), "a job kept on its owner's nodes");
            }
        }
        assert_eq!(may_run(node(Sharing::Private), "bob", Pool::Shared), Err("private to its owner"));
        assert!(may_run(node(Sharing::Everyone), "bob", Pool::Shared).is_ok());
        assert!(may_run(node(Sharing::Everyone), "carol", Pool::Shared).is_ok());
        assert!(may_run(node(Sharing::Users), "bob", Pool::Shared).is_ok());
        assert_eq!(may_run(node(Sharing::Users), "carol", Pool::Shared), Err("not shared with the job's owner"));
    }

    fn user(id: &str, role: Role) -> UserView {
        UserView { id: id.into(), email: format!("{id}@example.org"), name: id.into(), role, created_at_ms: 0, disabled: false }
    }

    #[test]
    fn owner_or_admin() {
        assert!(may_manage(&user("a", Role::User), "a"));
        assert!(!may_manage(&user("b", Role::User), "a"));
        assert!(may_manage(&user("c", Role::Admin), "a"));
    }
}
