//! Courtesy validator for user snippets: syntax errors and imports outside
//! the module allow-list, reported as `line N, column M: message`.
//!
//! This is **not** a security boundary (the kernel sandbox is, see
//! SECURITY.md): it only turns the commonest mistakes into clear messages
//! before a job is started, and everything stays safe with it switched off
//! (`--no-validate`). It does not try to catch `exec("import os")`,
//! `getattr` tricks or the like.
//!
//! # What it checks
//!
//! - The code must not be over [`Rules::max_code_bytes`] nor empty (only
//!   whitespace and comments).
//! - It must parse as Python; the first syntax error is reported with the
//!   parser's message, at a 1-based line and column (columns count
//!   characters, not bytes).
//! - Every `import x`, `import x.y as z` and `from x.y import z`, anywhere in
//!   the tree (functions, classes, `if`/`try`/`with` blocks, ...), must name a
//!   module whose top-level package is in [`Rules::allowed_modules`].
//!   Relative imports, `importlib` and `__import__` are always refused.
//!
//! All findings are reported, sorted by position (a syntax error alone).
//!
//! # Parser choice
//!
//! We use Ruff's own parser, the crate [`ruff_python_parser`] **0.0.10**
//! (MIT, component of Ruff 0.16.4), with `ruff_python_ast` and
//! `ruff_text_size` at the same version. Despite the 0.0.x numbers it is not a
//! third-party republish: Astral publishes these crates from the
//! `astral-sh/ruff` repository as part of every Ruff release (crates.io
//! trusted publishing, astral-sh/ruff PR #26271), one 0.0.x version per Ruff
//! version, with an explicitly unstable Rust API, hence the exact `=0.0.10`
//! pins. The alternative, `rustpython-ruff_python_parser` (0.15.8/0.16.x,
//! also MIT), is the same code republished by the RustPython project under
//! the description "Unofficial fork for RustPython", released less often and
//! behind upstream; we prefer the upstream publisher. 0.0.10 is the newest
//! release that builds on the toolchain here (Rust 1.95; 0.0.11+ need 1.96+).
//!
//! The parser is a hand-written recursive-descent parser that handles current
//! Python syntax (3.12's PEP 695 generics and PEP 701 f-strings included),
//! recovers from errors and gives byte ranges for them. It has no optional
//! features to turn off (0.0.10 always builds `stacker`, which it uses to grow
//! its stack on deep nesting). Our walk uses Ruff's AST
//! [`Visitor`](ruff_python_ast::visitor::Visitor).
//!
//! Deep nesting: the parser grows its stack for most, but not all, of its
//! recursion (`lambda a=lambda a=...` recurses unguarded), and dropping a deep
//! tree recurses too. So each validation runs on a stack sized to the code
//! (see `STACK_PER_BYTE`), and no input within the size limit can overflow
//! the caller's stack (tested with thousands of nested brackets, lambdas,
//! f-strings, patterns, ... on a 256 KiB thread).

mod imports;
mod position;

use std::collections::BTreeSet;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ruff_python_ast::PySourceType;
use ruff_python_parser::parse_unchecked_source;
use ruff_text_size::Ranged;

use crate::imports::{ImportChecker, RawFinding};
use crate::position::PositionCursor;

/// The default module allow-list (docs/configuration.md, `[validator]`).
pub const DEFAULT_ALLOWED_MODULES: &[&str] = &[
    "pandas",
    "numpy",
    "datetime",
    "math",
    "statistics",
    "collections",
    "itertools",
    "functools",
    "decimal",
    "json",
    "re",
    "matplotlib",
];

/// Default for [`Rules::max_code_bytes`].
pub const DEFAULT_MAX_CODE_BYTES: usize = 20_000;

/// Stack, in bytes, given to a validation whatever the code's size.
const STACK_BASE: usize = 512 * 1024;
/// Stack, in bytes, given to a validation per byte of code.
///
/// Parsing, walking and dropping recurse once per nesting level, and some of
/// the parser's paths (such as `lambda a=lambda a=...`) do not grow the stack
/// by themselves. A level takes at least one byte of code, so the stack needed
/// is bounded by the code's size; the worst measured case is about 470 bytes
/// of stack per byte of code in unoptimised builds (see the `deep_nesting_*`
/// tests), and this leaves a wide margin. The memory is only reserved: pages
/// are used as deep as the code actually nests.
const STACK_PER_BYTE: usize = 1024;

/// What the validator accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Top-level packages that may be imported: `matplotlib` allows
    /// `matplotlib.pyplot` too. `importlib` is refused even if listed.
    pub allowed_modules: BTreeSet<String>,
    /// Largest accepted snippet, in bytes of UTF-8. Validation reserves (but
    /// only touches as needed) 1 KiB of stack per byte of code, so keep this
    /// in the tens of kilobytes.
    pub max_code_bytes: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            allowed_modules: DEFAULT_ALLOWED_MODULES
                .iter()
                .map(|m| (*m).to_owned())
                .collect(),
            max_code_bytes: DEFAULT_MAX_CODE_BYTES,
        }
    }
}

/// One problem found in a snippet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    pub message: String,
    /// For a syntax error: the offending line, and a caret under the
    /// column on the line below (shown indented after the message).
    pub excerpt: Option<String>,
}

impl Finding {
    /// "line N, column M: message", without the excerpt.
    pub fn summary(&self) -> String {
        format!(
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())?;
        for line in self.excerpt.iter().flat_map(|e| e.lines()) {
            write!(f, "\n    {line}")?;
        }
        Ok(())
    }
}

/// A snippet was refused; `findings` is never empty and sorted by position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_findings(.findings))]
pub struct ValidationError {
    pub findings: Vec<Finding>,
}

fn display_findings(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(Finding::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ValidationError {
    fn single(message: String) -> Self {
        Self {
            findings: vec![Finding {
                line: 1,
                column: 1,
                message,
                excerpt: None,
            }],
        }
    }
}

/// Checks a snippet against `rules`; see the crate documentation.
///
/// Never panics and never overflows the caller's stack, whatever `code` is.
pub fn validate(code: &str, rules: &Rules) -> Result<(), ValidationError> {
    if code.len() > rules.max_code_bytes {
        return Err(ValidationError::single(format!(
            "the code is {} bytes, over the limit of {} bytes",
            code.len(),
            rules.max_code_bytes
        )));
    }
    if is_blank(code) {
        return Err(ValidationError::single(EMPTY.to_owned()));
    }
    // The parser is third-party code; a bug in it must not take the caller
    // down with it.
    let stack = STACK_PER_BYTE
        .saturating_mul(code.len())
        .saturating_add(STACK_BASE);
    stacker::maybe_grow(stack, stack, || {
        catch_unwind(AssertUnwindSafe(|| check(code, rules))).unwrap_or_else(|_| {
            Err(ValidationError::single(
                "internal error: the validator failed on this code (please report it)".to_owned(),
            ))
        })
    })
}

const EMPTY: &str = "the code is empty";

/// Whether `code` holds only Python whitespace.
fn is_blank(code: &str) -> bool {
    code.chars()
        .all(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c'))
}

/// Parses and walks `code`; the part of [`validate`] that runs the parser.
fn check(code: &str, rules: &Rules) -> Result<(), ValidationError> {
    let parsed = parse_unchecked_source(code, PySourceType::Python);

    let mut syntax = false;
    let mut raw = if let Some(error) = parsed.errors().iter().min_by_key(|e| e.start()) {
        syntax = true;
        let at = error.start().to_usize();
        let (offset, message) = syntax::bracket_problem(parsed.tokens(), code, at)
            .unwrap_or_else(|| (at, error.error.to_string()));
        vec![RawFinding { offset, message }]
    } else if parsed.suite().is_empty() {
        vec![RawFinding {
            offset: 0,
            message: EMPTY.to_owned(),
        }]
    } else {
        let mut checker = ImportChecker::new(&rules.allowed_modules);
        checker.check_body(parsed.suite());
        checker.into_findings()
    };

    drop(parsed);

    if raw.is_empty() {
        return Ok(());
    }
    raw.sort_by_key(|f| f.offset);
    let mut cursor = PositionCursor::new(code);
    let findings = raw
        .into_iter()
        .map(|f| {
            let pos = cursor.position(f.offset);
            Finding {
                line: pos.line,
                column: pos.column,
                message: f.message,
                excerpt: if syntax {
                    syntax::excerpt(code, pos.line, pos.column)
                } else {
                    None
                },
            }
        })
        .collect();
    Err(ValidationError { findings })
}

mod params;
mod syntax;
#[cfg(test)]
mod tests;

pub use params::{params_read, ParamsUse};
