//! The history of a function: one [`VersionRecord`] per change, numbered
//! from 1 without gaps, each the state after the change and what the change
//! was ([`VersionAction`]). [`super::FunctionStore::history`] reads them.

use serde::Serialize;

/// What a version row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionAction {
    Save,
    Rename,
    Delete,
    Import,
}

impl VersionAction {
    /// The name stored with the version.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionAction::Save => "save",
            VersionAction::Rename => "rename",
            VersionAction::Delete => "delete",
            VersionAction::Import => "import",
        }
    }

    /// The action a stored name stands for.
    pub fn parse(s: &str) -> Option<VersionAction> {
        match s {
            "save" => Some(VersionAction::Save),
            "rename" => Some(VersionAction::Rename),
            "delete" => Some(VersionAction::Delete),
            "import" => Some(VersionAction::Import),
            _ => None,
        }
    }
}

/// One row of a function's history: the state after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionRecord {
    pub function_id: i64,
    pub version: u32,
    pub name: String,
    pub description: String,
    pub code: String,
    pub saved_by: String,
    pub saved_at: String,
    pub action: VersionAction,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_round_trip() {
        for a in [
            VersionAction::Save,
            VersionAction::Rename,
            VersionAction::Delete,
            VersionAction::Import,
        ] {
            assert_eq!(VersionAction::parse(a.as_str()), Some(a));
            assert_eq!(
                serde_json::to_value(a).unwrap(),
                serde_json::json!(a.as_str())
            );
        }
        assert_eq!(VersionAction::parse("Save"), None);
    }
}
