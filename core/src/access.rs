//! Who may act on what. Written once: every service asks here.

use crate::views::UserView;

/// Whether `user` may see and change a resource owned by `owner_id`: its owner or an admin.
/// A resource the caller may not manage is answered as missing, so its existence is not told.
pub fn may_manage(user: &UserView, owner_id: &str) -> bool {
    user.id == owner_id || user.is_admin()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    fn user(id: &str, role: Role) -> UserView {
        UserView { id: id.into(), email: format!("{id}@example.org"), name: id.into(), role, created_at_ms: 0 }
    }

    #[test]
    fn owner_or_admin() {
        assert!(may_manage(&user("a", Role::User), "a"));
        assert!(!may_manage(&user("b", Role::User), "a"));
        assert!(may_manage(&user("c", Role::Admin), "a"));
    }
}
