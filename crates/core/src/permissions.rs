//! Who may run code and save functions, and where: admins and optional
//! allow-lists of users and channels from `[permissions]` in the
//! configuration.
//!
//! # Rules
//!
//! - An admin passes every check.
//! - An empty list allows everyone: with no `execute_users` anyone may run
//!   code, with no `execute_channels` code may be run in any channel.
//! - Saving a function needs the right to run code as well as the save
//!   lists: otherwise someone kept off `execute_users` could still get code
//!   run by saving it as a function for others to run.
//! - A channel list applies to requests made in a channel. A request without
//!   one (`tradebox run`, the console, the HTTP API; `channel` = `None`) is
//!   checked against the user lists only: those front ends have their own
//!   access control.
//! - Users and channels are compared exactly (Slack ids such as `U123` and
//!   `C123`, or console user names); the configuration refuses mentions
//!   such as `<@U123>` and channel names such as `#general`.
//!
//! A [`Refusal`] carries a reason for the user that says whom to ask or
//! where to go, e.g. "you are not on the list of users allowed to run code
//! here; ask an admin (<@U1>, <@U2>)". Slack ids are written as Slack
//! references (`<@U1>`, `<#C1>`), which Slack shows as names; other names
//! as they are.

use serde::Serialize;

use crate::config::PermissionsSection;

/// How many admins or channels a refusal lists before "and N more".
const MAX_LISTED: usize = 5;

/// Which rule refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// The user is not on `execute_users`.
    ExecuteUser,
    /// The channel is not on `execute_channels`.
    ExecuteChannel,
    /// The user is not on `save_users`.
    SaveUser,
    /// The channel is not on `save_channels`.
    SaveChannel,
}

/// A request that the permissions refuse, with the reason to show the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    pub kind: RefusalKind,
    /// A sentence for the user, in Slack mrkdwn.
    pub reason: String,
}

/// The permission rules; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    admins: Vec<String>,
    execute_users: Vec<String>,
    execute_channels: Vec<String>,
    save_users: Vec<String>,
    save_channels: Vec<String>,
}

impl Permissions {
    /// The rules of a `[permissions]` section.
    pub fn new(section: &PermissionsSection) -> Permissions {
        Permissions {
            admins: section.admins.clone(),
            execute_users: section.execute_users.clone(),
            execute_channels: section.execute_channels.clone(),
            save_users: section.save_users.clone(),
            save_channels: section.save_channels.clone(),
        }
    }

    /// The same rules with one more admin, e.g. the console user when
    /// `console.user_is_admin` is set.
    pub fn with_admin(mut self, user: impl Into<String>) -> Permissions {
        let user = user.into();
        if !self.is_admin(&user) {
            self.admins.push(user);
        }
        self
    }

    /// The admins, in configuration order.
    pub fn admins(&self) -> &[String] {
        &self.admins
    }

    pub fn is_admin(&self, user: &str) -> bool {
        self.admins.iter().any(|a| a == user)
    }

    /// May `user` run code (`/analyze`, `/runfunc`, a Run button) in
    /// `channel`?
    pub fn check_execute(&self, user: &str, channel: Option<&str>) -> Result<(), Refusal> {
        if self.is_admin(user) {
            return Ok(());
        }
        if !allows(&self.execute_users, user) {
            return Err(Refusal {
                kind: RefusalKind::ExecuteUser,
                reason: format!(
                    "you are not on the list of users allowed to run code here; {}",
                    self.ask_an_admin("permissions.execute_users")
                ),
            });
        }
        if channel.is_some_and(|c| !allows(&self.execute_channels, c)) {
            return Err(Refusal {
                kind: RefusalKind::ExecuteChannel,
                reason: format!(
                    "code cannot be run in this channel; use one of {}",
                    list(&self.execute_channels, mention_channel)
                ),
            });
        }
        Ok(())
    }

    /// May `user` save (or rename) a function in `channel`? Needs the right
    /// to run code too.
    pub fn check_save(&self, user: &str, channel: Option<&str>) -> Result<(), Refusal> {
        if self.is_admin(user) {
            return Ok(());
        }
        if !allows(&self.execute_users, user) {
            return Err(Refusal {
                kind: RefusalKind::ExecuteUser,
                reason: format!(
                    "you are not on the list of users allowed to run code here, which saving a \
                     function needs; {}",
                    self.ask_an_admin("permissions.execute_users")
                ),
            });
        }
        if !allows(&self.save_users, user) {
            return Err(Refusal {
                kind: RefusalKind::SaveUser,
                reason: format!(
                    "you are not on the list of users allowed to save functions; {}",
                    self.ask_an_admin("permissions.save_users")
                ),
            });
        }
        let Some(channel) = channel else {
            return Ok(());
        };
        for (channels, kind, what) in [
            (
                &self.execute_channels,
                RefusalKind::ExecuteChannel,
                "code cannot be run",
            ),
            (
                &self.save_channels,
                RefusalKind::SaveChannel,
                "functions cannot be saved",
            ),
        ] {
            if !allows(channels, channel) {
                let usable = usable_channels(&self.execute_channels, &self.save_channels);
                let advice = if usable.is_empty() {
                    "ask an admin which channel to use".to_owned()
                } else {
                    format!("use one of {}", list(&usable, mention_channel))
                };
                return Err(Refusal {
                    kind,
                    reason: format!("{what} in this channel; {advice}"),
                });
            }
        }
        Ok(())
    }

    fn ask_an_admin(&self, list_key: &str) -> String {
        if self.admins.is_empty() {
            format!("ask whoever runs tradebox to add you to `{list_key}`")
        } else {
            format!("ask an admin ({})", list(&self.admins, mention_user))
        }
    }
}

/// True when `list` is empty (no restriction) or holds `item`.
fn allows(list: &[String], item: &str) -> bool {
    list.is_empty() || list.iter().any(|x| x == item)
}

/// Channels where saving is possible: on both lists, an empty list allowing
/// all.
fn usable_channels(execute: &[String], save: &[String]) -> Vec<String> {
    match (execute.is_empty(), save.is_empty()) {
        (true, _) => save.to_vec(),
        (_, true) => execute.to_vec(),
        _ => save
            .iter()
            .filter(|c| execute.contains(c))
            .cloned()
            .collect(),
    }
}

/// "a, b, c and 2 more".
fn list(items: &[String], show: fn(&str) -> String) -> String {
    let shown: Vec<String> = items.iter().take(MAX_LISTED).map(|i| show(i)).collect();
    let mut out = shown.join(", ");
    if items.len() > MAX_LISTED {
        out.push_str(&format!(" and {} more", items.len() - MAX_LISTED));
    }
    out
}

/// True for a Slack id: an upper-case letter from `first`, then upper-case
/// letters and digits.
fn is_slack_id(s: &str, first: &[char]) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| first.contains(&c))
        && s.len() > 1
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// `<@U1>` for a Slack user id (Slack shows the name), the name otherwise.
pub fn mention_user(user: &str) -> String {
    if is_slack_id(user, &['U', 'W']) {
        format!("<@{user}>")
    } else {
        user.to_owned()
    }
}

/// `<#C1>` for a Slack channel id (Slack shows `#name`), `#name` otherwise.
pub fn mention_channel(channel: &str) -> String {
    if is_slack_id(channel, &['C', 'G', 'D']) {
        format!("<#{channel}>")
    } else {
        format!("#{channel}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn perms(
        admins: &[&str],
        execute_users: &[&str],
        execute_channels: &[&str],
        save_users: &[&str],
        save_channels: &[&str],
    ) -> Permissions {
        Permissions::new(&PermissionsSection {
            admins: ids(admins),
            execute_users: ids(execute_users),
            execute_channels: ids(execute_channels),
            save_users: ids(save_users),
            save_channels: ids(save_channels),
        })
    }

    fn kind(r: Result<(), Refusal>) -> Option<RefusalKind> {
        r.err().map(|r| r.kind)
    }

    #[test]
    fn empty_lists_allow_everyone_everywhere() {
        let p = Permissions::new(&PermissionsSection::default());
        for user in ["U1", "alice", "W9"] {
            for channel in [None, Some("C1"), Some("D42")] {
                assert_eq!(p.check_execute(user, channel), Ok(()));
                assert_eq!(p.check_save(user, channel), Ok(()));
            }
            assert!(!p.is_admin(user));
        }
        assert!(p.admins().is_empty());
    }

    #[test]
    fn admins_pass_every_check() {
        let p = perms(&["U1", "alice"], &["U2"], &["C1"], &["U3"], &["C2"]);
        assert!(p.is_admin("U1") && p.is_admin("alice"));
        for admin in ["U1", "alice"] {
            for channel in [None, Some("C1"), Some("C2"), Some("C9")] {
                assert_eq!(p.check_execute(admin, channel), Ok(()));
                assert_eq!(p.check_save(admin, channel), Ok(()));
            }
        }
        assert!(!p.is_admin("U2"));
    }

    #[test]
    fn execute_users_list() {
        let p = perms(&["U1", "U2"], &["U3", "bob"], &[], &[], &[]);
        assert_eq!(p.check_execute("U3", Some("C1")), Ok(()));
        assert_eq!(p.check_execute("bob", None), Ok(()));
        let refusal = p.check_execute("U4", Some("C1")).unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::ExecuteUser);
        assert_eq!(
            refusal.reason,
            "you are not on the list of users allowed to run code here; ask an admin (<@U1>, <@U2>)"
        );
        assert_eq!(refusal.to_string(), refusal.reason);
        // Without a channel the user list still applies.
        assert_eq!(
            kind(p.check_execute("U4", None)),
            Some(RefusalKind::ExecuteUser)
        );
        // Users are compared exactly.
        assert!(p.check_execute("u3", None).is_err());
        assert!(p.check_execute(" U3", None).is_err());
        assert!(p.check_execute("Bob", None).is_err());
        assert!(p.check_execute("", None).is_err());

        let p = perms(&[], &["U3"], &[], &[], &[]);
        assert_eq!(
            p.check_execute("U4", None).unwrap_err().reason,
            "you are not on the list of users allowed to run code here; ask whoever runs \
             tradebox to add you to `permissions.execute_users`"
        );
        let p = perms(&["alice", "U1"], &["U3"], &[], &[], &[]);
        assert!(p
            .check_execute("U4", None)
            .unwrap_err()
            .reason
            .ends_with("ask an admin (alice, <@U1>)"));
    }

    #[test]
    fn execute_channels_list() {
        let p = perms(&["U1"], &[], &["C1", "C2"], &[], &[]);
        assert_eq!(p.check_execute("U5", Some("C1")), Ok(()));
        assert_eq!(p.check_execute("U5", Some("C2")), Ok(()));
        assert_eq!(
            p.check_execute("U5", None),
            Ok(()),
            "no channel: CLI, console"
        );
        let refusal = p.check_execute("U5", Some("C3")).unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::ExecuteChannel);
        assert_eq!(
            refusal.reason,
            "code cannot be run in this channel; use one of <#C1>, <#C2>"
        );
        assert!(
            p.check_execute("U5", Some("c1")).is_err(),
            "exact comparison"
        );
        // Both lists: the user is checked first.
        let p = perms(&[], &["U5"], &["C1"], &[], &[]);
        assert_eq!(p.check_execute("U5", Some("C1")), Ok(()));
        assert_eq!(
            kind(p.check_execute("U6", Some("C9"))),
            Some(RefusalKind::ExecuteUser)
        );
        assert_eq!(
            kind(p.check_execute("U5", Some("C9"))),
            Some(RefusalKind::ExecuteChannel)
        );
    }

    #[test]
    fn save_lists() {
        let p = perms(&["U1"], &[], &[], &["U3"], &["C2"]);
        assert_eq!(p.check_save("U3", Some("C2")), Ok(()));
        assert_eq!(p.check_save("U3", None), Ok(()));
        // Others may still run code.
        assert_eq!(p.check_execute("U4", Some("C9")), Ok(()));
        let refusal = p.check_save("U4", Some("C2")).unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::SaveUser);
        assert_eq!(
            refusal.reason,
            "you are not on the list of users allowed to save functions; ask an admin (<@U1>)"
        );
        let refusal = p.check_save("U3", Some("C9")).unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::SaveChannel);
        assert_eq!(
            refusal.reason,
            "functions cannot be saved in this channel; use one of <#C2>"
        );
    }

    #[test]
    fn saving_needs_the_right_to_run_code() {
        let p = perms(&["U1"], &["U3"], &["C1", "C2"], &[], &["C2", "C3"]);
        assert_eq!(p.check_save("U3", Some("C2")), Ok(()));
        let refusal = p.check_save("U4", Some("C2")).unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::ExecuteUser);
        assert!(
            refusal.reason.contains("which saving a function needs"),
            "{}",
            refusal.reason
        );
        // C1: code may run there but functions cannot be saved; C3 the
        // reverse; C2 is the only channel for both.
        let refusal = p.check_save("U3", Some("C1")).unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::SaveChannel);
        assert!(
            refusal.reason.ends_with("use one of <#C2>"),
            "{}",
            refusal.reason
        );
        let refusal = p.check_save("U3", Some("C3")).unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::ExecuteChannel);
        assert!(
            refusal.reason.ends_with("use one of <#C2>"),
            "{}",
            refusal.reason
        );
        // No channel allows both.
        let p = perms(&[], &[], &["C1"], &[], &["C2"]);
        assert_eq!(
            p.check_save("U3", Some("C1")).unwrap_err().reason,
            "functions cannot be saved in this channel; ask an admin which channel to use"
        );
    }

    #[test]
    fn extra_admin_and_long_lists() {
        let p = perms(&[], &["U3"], &[], &[], &[]).with_admin("alice");
        assert!(p.is_admin("alice"));
        assert_eq!(p.check_execute("alice", Some("C1")), Ok(()));
        assert_eq!(
            p.clone().with_admin("alice").admins(),
            ["alice"],
            "no duplicate"
        );

        let channels: Vec<String> = (1..=8).map(|i| format!("C{i}")).collect();
        let p = Permissions::new(&PermissionsSection {
            execute_channels: channels,
            ..PermissionsSection::default()
        });
        assert_eq!(
            p.check_execute("U1", Some("C9")).unwrap_err().reason,
            "code cannot be run in this channel; use one of <#C1>, <#C2>, <#C3>, <#C4>, <#C5> and 3 more"
        );
    }

    #[test]
    fn mentions() {
        assert_eq!(mention_user("U123ABC"), "<@U123ABC>");
        assert_eq!(mention_user("W1"), "<@W1>");
        assert_eq!(mention_user("alice"), "alice");
        assert_eq!(mention_user("Ux"), "Ux");
        assert_eq!(mention_user("U"), "U");
        assert_eq!(mention_channel("C0123"), "<#C0123>");
        assert_eq!(mention_channel("G1"), "<#G1>");
        assert_eq!(mention_channel("console"), "#console");
    }
}
