//! The names people give applications, tokens and nodes: 1 to 64 printable characters,
//! trimmed. The message is for people; forms show it as it is.

/// Longest name we accept, in characters.
pub const NAME_MAX_CHARS: usize = 64;

/// Checks an application or token name.
pub fn check_name(raw: &str) -> Result<String, String> {
    checked(raw, "Give it a name.")
}

/// Checks a node name.
pub fn check_node_name(raw: &str) -> Result<String, String> {
    checked(raw, "Give the node a name.")
}

fn checked(raw: &str, missing: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(missing.into());
    }
    if name.chars().count() > NAME_MAX_CHARS {
        return Err(format!("Use at most {NAME_MAX_CHARS} characters."));
    }
    if name.chars().any(char::is_control) {
        return Err("Use printable characters only.".into());
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name(" iris ").as_deref(), Ok("iris"));
        assert_eq!(check_node_name("  ").unwrap_err(), "Give the node a name.");
        assert!(check_name(" ").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
        assert!(check_name(&"é".repeat(64)).is_ok(), "characters, not bytes");
        assert!(check_name("a\nb").is_err());
    }
}
