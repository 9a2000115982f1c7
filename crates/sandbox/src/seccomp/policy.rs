//! The policy files as typed data: seccompiler's JSON format (see
//! `crates/sandbox/seccomp/README.md`), read with every comment kept, so
//! that the same value is checked by [`lint`] and handed to seccompiler.
//!
//! The types mirror seccompiler's (`deny_unknown_fields` included), so a
//! file this module reads is a file seccompiler reads, and the other way
//! round.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What a filter does with a call: seccompiler's actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Errno(u32),
    KillThread,
    KillProcess,
    Log,
    Trace(u32),
    Trap,
}

impl Action {
    /// The value a filter returns for this action (`SECCOMP_RET_*`).
    pub fn ret(self) -> u32 {
        const DATA: u32 = 0xffff;
        match self {
            Action::Allow => 0x7fff_0000,
            Action::Errno(e) => 0x0005_0000 | (e & DATA),
            Action::KillThread => 0,
            Action::KillProcess => 0x8000_0000,
            Action::Log => 0x7ffc_0000,
            Action::Trace(t) => 0x7ff0_0000 | (t & DATA),
            Action::Trap => 0x0003_0000,
        }
    }
}

/// How much of an argument a condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgLen {
    /// The low 32 bits: right for `int` and `unsigned int` arguments, which
    /// the kernel reads from the low half of the register.
    Dword,
    /// All 64 bits.
    Qword,
}

/// A comparison, as seccompiler defines them (unsigned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    /// `(arg & mask) == (val & mask)`.
    MaskedEq(u64),
}

/// One condition on one argument of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub index: u8,
    #[serde(rename = "type")]
    pub len: ArgLen,
    pub op: Op,
    pub val: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl Condition {
    /// The comparison, without the comment.
    fn key(&self) -> (u8, ArgLen, Op, u64) {
        (self.index, self.len, self.op, self.val)
    }

    /// Whether `args` satisfies this condition (the semantics of the
    /// program seccompiler generates for it).
    pub fn holds(&self, args: &[u64; 6]) -> bool {
        let Some(&raw) = args.get(usize::from(self.index)) else {
            return false;
        };
        let (arg, val) = match self.len {
            ArgLen::Dword => (raw & 0xffff_ffff, self.val & 0xffff_ffff),
            ArgLen::Qword => (raw, self.val),
        };
        match self.op {
            Op::Eq => arg == val,
            Op::Ne => arg != val,
            Op::Gt => arg > val,
            Op::Ge => arg >= val,
            Op::Lt => arg < val,
            Op::Le => arg <= val,
            Op::MaskedEq(mask) => {
                let mask = match self.len {
                    ArgLen::Dword => mask & 0xffff_ffff,
                    ArgLen::Qword => mask,
                };
                arg & mask == val & mask
            }
        }
    }

    /// Argument values worth trying to satisfy this condition.
    fn candidates(&self) -> Vec<u64> {
        let v = self.val;
        let mut out = vec![v, v.wrapping_add(1), v.wrapping_sub(1)];
        if let Op::MaskedEq(mask) = self.op {
            out.extend([v & mask, (v & mask) | !mask, v & mask & 0xffff_ffff]);
        }
        out
    }
}

/// One rule: a call, and the conditions (all of them) its arguments must
/// meet; without conditions, every call of that name matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub syscall: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl Rule {
    /// The rule's conditions (none for an unconditional rule).
    pub fn conditions(&self) -> &[Condition] {
        self.args.as_deref().unwrap_or(&[])
    }

    /// Whether a call with these arguments matches the rule.
    pub fn matches(&self, args: &[u64; 6]) -> bool {
        self.conditions().iter().all(|c| c.holds(args))
    }

    /// A name for the rule: the call, and for a conditional rule the first
    /// word of its first condition's comment (`ioctl TCGETS`, `kill 1`).
    pub fn label(&self) -> String {
        match self.conditions().first() {
            None => self.syscall.clone(),
            Some(c) => {
                let word = c
                    .comment
                    .as_deref()
                    .unwrap_or("")
                    .split([':', ' '])
                    .next()
                    .unwrap_or("");
                format!("{} {}", self.syscall, word)
            }
        }
    }

    /// Arguments that satisfy every condition of the rule, if the simple
    /// candidates (each condition's value and its neighbours, the masked
    /// forms, a few edge values) find some: a call this rule matches.
    pub fn witness(&self) -> Option<[u64; 6]> {
        let mut args = [0u64; 6];
        for index in 0..6u8 {
            let on_arg: Vec<&Condition> = self
                .conditions()
                .iter()
                .filter(|c| c.index == index)
                .collect();
            if on_arg.is_empty() {
                continue;
            }
            let mut candidates: Vec<u64> = on_arg.iter().flat_map(|c| c.candidates()).collect();
            candidates.extend([0, 1, 2, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, u64::MAX]);
            let mut probe = args;
            let found = candidates.into_iter().find(|&x| {
                probe[usize::from(index)] = x;
                on_arg.iter().all(|c| c.holds(&probe))
            })?;
            args[usize::from(index)] = found;
        }
        self.matches(&args).then_some(args)
    }
}

/// One filter: an action for the calls its rules match, another for the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterDoc {
    pub mismatch_action: Action,
    pub match_action: Action,
    pub filter: Vec<Rule>,
}

impl FilterDoc {
    /// Whether the filter is an allow-list (allow what matches).
    pub fn is_allow_list(&self) -> bool {
        self.match_action == Action::Allow
    }

    /// The action for a call, evaluated on the rules (as seccompiler
    /// compiles them: a call name with conditional rules matches when one
    /// of them does; one with only an unconditional rule always matches).
    pub fn action_for(&self, syscall: &str, args: &[u64; 6]) -> Action {
        let rules: Vec<&Rule> = self
            .filter
            .iter()
            .filter(|r| r.syscall == syscall)
            .collect();
        let conditional: Vec<&&Rule> = rules.iter().filter(|r| r.args.is_some()).collect();
        let matched = if rules.is_empty() {
            false
        } else if conditional.is_empty() {
            true
        } else {
            conditional.iter().any(|r| r.matches(args))
        };
        if matched {
            self.match_action
        } else {
            self.mismatch_action
        }
    }

    /// This filter without its `index`th rule.
    pub fn without(&self, index: usize) -> FilterDoc {
        let mut doc = self.clone();
        if index < doc.filter.len() {
            doc.filter.remove(index);
        }
        doc
    }
}

/// A problem [`lint`] found, naming the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding(pub String);

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The shortest comment accepted as a reason.
pub const MIN_REASON: usize = 12;

fn blank(comment: &Option<String>) -> bool {
    comment.as_deref().is_none_or(|c| c.trim().is_empty())
}

/// Static checks of one filter: every rule and every condition carries a
/// comment (a rule's comment is its reason, at least [`MIN_REASON`]
/// characters and more than the call's name); no call has an unconditional
/// rule twice, or next to conditional rules (seccompiler would then keep
/// only the conditional ones, silently); no rule repeats or is shadowed by
/// another of the same call whose conditions are a subset of its own; no
/// rule contradicts itself (two different `eq` on one argument, or an
/// `eq` and `ne` of the same value) or has a condition on a missing
/// argument.
pub fn lint(name: &str, doc: &FilterDoc) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut say = |s: String| out.push(Finding(format!("{name}: {s}")));
    if doc.match_action == doc.mismatch_action {
        say("match_action and mismatch_action are the same".into());
    }
    for (i, rule) in doc.filter.iter().enumerate() {
        let reason = rule.comment.as_deref().unwrap_or("").trim();
        if reason.len() < MIN_REASON || reason == rule.syscall {
            say(format!(
                "rule {i} ({}) has no reason: its comment must say why",
                rule.label()
            ));
        }
        if rule.args.as_ref().is_some_and(Vec::is_empty) {
            say(format!(
                "rule {i} ({}) has an empty \"args\"; leave it out for an unconditional rule",
                rule.label()
            ));
        }
        for c in rule.conditions() {
            if blank(&c.comment) {
                say(format!(
                    "rule {i} ({}): a condition on argument {} has no comment naming its value",
                    rule.label(),
                    c.index
                ));
            }
            if c.index > 5 {
                say(format!(
                    "rule {i} ({}): argument {} does not exist",
                    rule.label(),
                    c.index
                ));
            }
        }
        let conds = rule.conditions();
        for (a, ca) in conds.iter().enumerate() {
            for cb in &conds[a + 1..] {
                if ca.index != cb.index || ca.len != cb.len {
                    continue;
                }
                let contradiction = match (ca.op, cb.op) {
                    (Op::Eq, Op::Eq) => ca.val != cb.val,
                    (Op::Eq, Op::Ne) | (Op::Ne, Op::Eq) => ca.val == cb.val,
                    _ => false,
                };
                if contradiction || ca.key() == cb.key() {
                    say(format!(
                        "rule {i} ({}): conditions on argument {} {}",
                        rule.label(),
                        ca.index,
                        if contradiction {
                            "contradict each other: it never matches"
                        } else {
                            "repeat"
                        }
                    ));
                }
            }
        }
        if rule.witness().is_none() && !conds.is_empty() {
            say(format!(
                "rule {i} ({}): no argument values found that meet its conditions",
                rule.label()
            ));
        }
    }
    let mut by_call: BTreeMap<&str, Vec<(usize, &Rule)>> = BTreeMap::new();
    for (i, rule) in doc.filter.iter().enumerate() {
        by_call
            .entry(rule.syscall.as_str())
            .or_default()
            .push((i, rule));
    }
    for (call, rules) in by_call {
        let unconditional = rules.iter().filter(|(_, r)| r.args.is_none()).count();
        if unconditional > 1 {
            say(format!("{call} has {unconditional} unconditional rules"));
        }
        if unconditional >= 1 && unconditional < rules.len() {
            say(format!(
                "{call} has an unconditional rule next to conditional ones: \
                 seccompiler would keep only the conditional ones"
            ));
        }
        for &(i, a) in &rules {
            for &(j, b) in &rules {
                if i == j || a.args.is_none() || b.args.is_none() {
                    continue;
                }
                let ka: Vec<_> = a.conditions().iter().map(Condition::key).collect();
                let kb: Vec<_> = b.conditions().iter().map(Condition::key).collect();
                let b_within_a = kb.iter().all(|k| ka.contains(k));
                if b_within_a && (ka.len() > kb.len() || (ka.len() == kb.len() && j < i)) {
                    say(format!(
                        "rule {i} ({}) is shadowed by rule {j} ({}): every call it matches, \
                         rule {j} matches too",
                        a.label(),
                        b.label()
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(index: u8, op: Op, val: u64) -> Condition {
        Condition {
            index,
            len: ArgLen::Dword,
            op,
            val,
            comment: Some("X: a value".into()),
        }
    }

    fn rule(syscall: &str, args: Option<Vec<Condition>>) -> Rule {
        Rule {
            syscall: syscall.into(),
            args,
            comment: Some("a reason long enough".into()),
        }
    }

    fn doc(rules: Vec<Rule>) -> FilterDoc {
        FilterDoc {
            mismatch_action: Action::Errno(1),
            match_action: Action::Allow,
            filter: rules,
        }
    }

    fn findings(rules: Vec<Rule>) -> Vec<String> {
        lint("t", &doc(rules)).into_iter().map(|f| f.0).collect()
    }

    #[test]
    fn a_clean_filter_has_no_findings() {
        let f = findings(vec![
            rule("read", None),
            rule("ioctl", Some(vec![cond(1, Op::Eq, 1)])),
            rule("ioctl", Some(vec![cond(1, Op::Eq, 2)])),
        ]);
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn missing_reasons_and_condition_comments_are_found() {
        let mut r = rule("read", None);
        r.comment = None;
        let mut short = rule("write", None);
        short.comment = Some("write".into());
        let mut c = cond(0, Op::Eq, 1);
        c.comment = Some("  ".into());
        let f = findings(vec![r, short, rule("kill", Some(vec![c]))]);
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(f[0].contains("rule 0 (read) has no reason"), "{f:?}");
        assert!(f[1].contains("rule 1 (write) has no reason"), "{f:?}");
        assert!(f[2].contains("no comment naming its value"), "{f:?}");
    }

    #[test]
    fn repeated_mixed_and_shadowed_rules_are_found() {
        let f = findings(vec![rule("read", None), rule("read", None)]);
        assert!(
            f.iter().any(|s| s.contains("2 unconditional rules")),
            "{f:?}"
        );

        let f = findings(vec![
            rule("ioctl", None),
            rule("ioctl", Some(vec![cond(1, Op::Eq, 1)])),
        ]);
        assert!(f.iter().any(|s| s.contains("next to conditional")), "{f:?}");

        let f = findings(vec![
            rule("prctl", Some(vec![cond(0, Op::Eq, 15)])),
            rule("prctl", Some(vec![cond(0, Op::Eq, 15), cond(1, Op::Eq, 0)])),
        ]);
        assert!(
            f.iter()
                .any(|s| s.contains("rule 1 (prctl X) is shadowed by rule 0")),
            "{f:?}"
        );

        let f = findings(vec![
            rule("prctl", Some(vec![cond(0, Op::Eq, 15)])),
            rule("prctl", Some(vec![cond(0, Op::Eq, 15)])),
        ]);
        assert_eq!(
            f.iter().filter(|s| s.contains("is shadowed")).count(),
            1,
            "one of two equal rules is reported: {f:?}"
        );
    }

    #[test]
    fn contradictions_are_found() {
        let f = findings(vec![rule(
            "kill",
            Some(vec![cond(0, Op::Eq, 1), cond(0, Op::Eq, 2)]),
        )]);
        assert!(f.iter().any(|s| s.contains("never matches")), "{f:?}");
        let f = findings(vec![rule(
            "kill",
            Some(vec![cond(0, Op::Gt, 5), cond(0, Op::Lt, 3)]),
        )]);
        assert!(f.iter().any(|s| s.contains("no argument values")), "{f:?}");
    }

    #[test]
    fn conditions_follow_seccompilers_semantics() {
        let pid = |v: u64| [v, 0, 0, 0, 0, 0];
        let gt1 = cond(0, Op::Gt, 1);
        let le_max = cond(0, Op::Le, 0x7fff_ffff);
        let self_only = rule("kill", Some(vec![gt1, le_max]));
        assert!(self_only.matches(&pid(5)));
        for denied in [0, 1, u64::MAX, 0xffff_ffff, 0xffff_fffe] {
            assert!(!self_only.matches(&pid(denied)), "{denied:#x}");
        }
        // A dword compares the low half only, as the kernel reads an int.
        assert!(self_only.matches(&pid(0xdead_0000_0000_0005)));
        let masked = Condition {
            index: 0,
            len: ArgLen::Qword,
            op: Op::MaskedEq(0x7e03_0000),
            val: 0x1_0000,
            comment: None,
        };
        assert!(masked.holds(&pid(0x3d0f00)));
        assert!(!masked.holds(&pid(0x3d0f00 | 0x1000_0000)));
        assert!(!masked.holds(&pid(0x11)));
        assert_eq!(self_only.witness(), Some(pid(2)));
        assert_eq!(self_only.label(), "kill X");
    }

    #[test]
    fn action_for_evaluates_the_rules() {
        let d = doc(vec![
            rule("read", None),
            rule("ioctl", Some(vec![cond(1, Op::Eq, 0x5401)])),
        ]);
        let a = |v| [3, v, 0, 0, 0, 0];
        assert_eq!(d.action_for("read", &a(0)), Action::Allow);
        assert_eq!(d.action_for("ioctl", &a(0x5401)), Action::Allow);
        assert_eq!(d.action_for("ioctl", &a(0x5412)), Action::Errno(1));
        assert_eq!(d.action_for("execve", &a(0)), Action::Errno(1));
        assert_eq!(d.without(0).action_for("read", &a(0)), Action::Errno(1));
    }
}
