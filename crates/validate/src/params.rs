//! Which parameters a saved function's code reads from `params`, the dict
//! `/runfunc name k=v` passes in: decided from the parsed code, so that a
//! reply can say when a parameter the user gave changed nothing.
//!
//! `params['days']` and `params.get('days', 7)` (with a literal key) read
//! one key; any other use of the name (`params[k]`, `**params`, `for k in
//! params`, passing it on, assigning to it) may read anything, and so does
//! code that does not parse.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ruff_python_ast::visitor::{walk_expr, walk_stmt, Visitor};
use ruff_python_ast::{Expr, PySourceType, Stmt};
use ruff_python_parser::parse_unchecked_source;

use crate::{STACK_BASE, STACK_PER_BYTE};

/// How a snippet uses `params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamsUse {
    /// It never mentions `params`: every parameter given is ignored.
    Unused,
    /// It reads exactly these keys (sorted).
    Keys(BTreeSet<String>),
    /// It may read any key.
    Any,
}

impl ParamsUse {
    /// The parameters among `given` that the code does not read.
    pub fn ignored<'a>(&self, given: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        match self {
            ParamsUse::Any => Vec::new(),
            ParamsUse::Unused => given.into_iter().collect(),
            ParamsUse::Keys(keys) => given.into_iter().filter(|k| !keys.contains(*k)).collect(),
        }
    }
}

/// How `code` uses `params`; never panics.
pub fn params_read(code: &str) -> ParamsUse {
    if !code.contains("params") {
        return ParamsUse::Unused;
    }
    if code.len() > crate::DEFAULT_MAX_CODE_BYTES {
        return ParamsUse::Any;
    }
    let stack = STACK_PER_BYTE
        .saturating_mul(code.len())
        .saturating_add(STACK_BASE);
    stacker::maybe_grow(stack, stack, || {
        catch_unwind(AssertUnwindSafe(|| walk(code))).unwrap_or(ParamsUse::Any)
    })
}

fn walk(code: &str) -> ParamsUse {
    let parsed = parse_unchecked_source(code, PySourceType::Python);
    if !parsed.errors().is_empty() {
        return ParamsUse::Any;
    }
    let mut finder = Finder {
        keys: BTreeSet::new(),
        any: false,
        seen: false,
    };
    for stmt in parsed.suite() {
        finder.visit_stmt(stmt);
    }
    match (finder.any, finder.seen) {
        (true, _) => ParamsUse::Any,
        (false, false) => ParamsUse::Unused,
        (false, true) => ParamsUse::Keys(finder.keys),
    }
}

struct Finder {
    keys: BTreeSet<String>,
    any: bool,
    seen: bool,
}

fn is_params(expr: &Expr) -> bool {
    matches!(expr, Expr::Name(name) if name.id.as_str() == "params")
}

fn literal(expr: &Expr) -> Option<String> {
    match expr {
        Expr::StringLiteral(s) => Some(s.value.to_str().to_owned()),
        _ => None,
    }
}

impl Finder {
    /// The key `expr` reads from `params` with a literal, if it is such a read.
    fn key_read(expr: &Expr) -> Option<Option<String>> {
        match expr {
            Expr::Subscript(sub) if is_params(&sub.value) => Some(literal(&sub.slice)),
            Expr::Call(call) => match &*call.func {
                Expr::Attribute(attr) if is_params(&attr.value) && attr.attr.as_str() == "get" => {
                    Some(call.arguments.args.first().and_then(literal))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

impl<'a> Visitor<'a> for Finder {
    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        stacker::maybe_grow(128 * 1024, 2 * 1024 * 1024, || walk_stmt(self, stmt));
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        if let Some(key) = Finder::key_read(expr) {
            self.seen = true;
            match key {
                Some(key) => {
                    self.keys.insert(key);
                }
                None => self.any = true,
            }
            // The rest of the call or subscript (a default, say) may use it too.
            match expr {
                Expr::Subscript(sub) => self.visit_expr(&sub.slice),
                Expr::Call(call) => {
                    for arg in call.arguments.args.iter().skip(1) {
                        self.visit_expr(arg);
                    }
                    for kw in call.arguments.keywords.iter() {
                        self.visit_expr(&kw.value);
                    }
                }
                _ => {}
            }
            return;
        }
        if is_params(expr) {
            self.seen = true;
            self.any = true;
        }
        stacker::maybe_grow(128 * 1024, 2 * 1024 * 1024, || walk_expr(self, expr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> ParamsUse {
        ParamsUse::Keys(names.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn literal_reads_are_keys_and_anything_else_may_read_all() {
        let cases = [
            (
                "df = load_trades(days=7)\nresult = len(df)",
                ParamsUse::Unused,
            ),
            ("# params are not read here\nresult = 1", ParamsUse::Unused),
            ("s = 'params'\nresult = s", ParamsUse::Unused),
            ("result = params['days']", keys(&["days"])),
            (
                "d = params.get('days', 7)\ne = params[\"exchange\"]\nresult = d",
                keys(&["days", "exchange"]),
            ),
            (
                "result = load_trades(days=int(params.get('days', params['fallback'])))",
                keys(&["days", "fallback"]),
            ),
            ("k = 'days'\nresult = params[k]", ParamsUse::Any),
            ("result = dict(**params)", ParamsUse::Any),
            ("result = [k for k in params]", ParamsUse::Any),
            ("result = 'days' in params", ParamsUse::Any),
            ("result = params.keys()", ParamsUse::Any),
            (
                "params = {'days': 1}\nresult = params['days']",
                ParamsUse::Any,
            ),
            (
                "def f():\n    return params['days']\nresult = f()",
                keys(&["days"]),
            ),
            ("result = params['days'", ParamsUse::Any), // does not parse
        ];
        for (code, want) in cases {
            assert_eq!(params_read(code), want, "{code:?}");
        }
    }

    #[test]
    fn ignored_parameters_are_those_not_read() {
        let given = ["days", "exchange"];
        assert_eq!(ParamsUse::Unused.ignored(given), ["days", "exchange"]);
        assert_eq!(keys(&["days"]).ignored(given), ["exchange"]);
        assert!(ParamsUse::Any.ignored(given).is_empty());
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let code = format!(
            "result = {}params['x']{}",
            "(".repeat(5000),
            ")".repeat(5000)
        );
        assert!(matches!(
            params_read(&code),
            ParamsUse::Keys(_) | ParamsUse::Any
        ));
    }
}
