//! The AST walk that checks imports against the module allow-list.
//!
//! It visits every statement and expression (function and class bodies,
//! `if`/`try`/`with` blocks, comprehensions, lambdas, f-string fields,
//! decorators, annotations, ...) with Ruff's [`Visitor`], and records:
//! imports of modules whose top-level package is not allowed, relative
//! imports, `importlib`, and any use of `__import__`.
//!
//! The walk is recursive, so each level grows the stack on demand with
//! `stacker`, as Ruff's parser does for most of its own recursion.

use std::collections::BTreeSet;

use ruff_python_ast::visitor::{walk_expr, walk_pattern, walk_stmt, Visitor};
use ruff_python_ast::{Expr, Pattern, Stmt, StmtImport, StmtImportFrom};
use ruff_text_size::{Ranged, TextSize};

/// Free stack below which a deeper level runs on a fresh stack segment.
const STACK_RED_ZONE: usize = 128 * 1024;
/// Size of each fresh stack segment.
const STACK_SEGMENT: usize = 2 * 1024 * 1024;

/// Modules refused whatever the allow-list says: they load modules by name
/// at run time, which would make the allow-list meaningless.
const DYNAMIC_IMPORT_MODULES: &[&str] = &["importlib"];

/// A finding before its byte offset is turned into a line and column.
#[derive(Debug)]
pub(crate) struct RawFinding {
    pub(crate) offset: usize,
    pub(crate) message: String,
}

/// Collects import findings while walking a module.
pub(crate) struct ImportChecker<'r> {
    allowed: &'r BTreeSet<String>,
    findings: Vec<RawFinding>,
}

impl<'r> ImportChecker<'r> {
    pub(crate) fn new(allowed: &'r BTreeSet<String>) -> Self {
        Self {
            allowed,
            findings: Vec::new(),
        }
    }

    /// Walks a module body.
    pub(crate) fn check_body(&mut self, body: &[Stmt]) {
        for stmt in body {
            self.visit_stmt(stmt);
        }
    }

    /// The findings, in the order they were met.
    pub(crate) fn into_findings(self) -> Vec<RawFinding> {
        self.findings
    }

    fn push(&mut self, at: TextSize, message: String) {
        self.findings.push(RawFinding {
            offset: at.to_usize(),
            message,
        });
    }

    /// Checks one imported module path such as `matplotlib.pyplot`.
    fn check_module(&mut self, module: &str, at: TextSize) {
        let top = module.split('.').next().unwrap_or(module);
        if DYNAMIC_IMPORT_MODULES.contains(&top) {
            self.push(
                at,
                format!(
                    "import of '{module}' is not allowed: dynamic imports are not supported \
                     (import an allowed module directly)"
                ),
            );
        } else if !self.allowed.contains(top) {
            let message = if self.allowed.is_empty() {
                format!("import of '{module}' is not allowed (no modules are allowed)")
            } else {
                let allowed: Vec<&str> = self.allowed.iter().map(String::as_str).collect();
                format!(
                    "import of '{module}' is not allowed (allowed: {})",
                    allowed.join(", ")
                )
            };
            self.push(at, message);
        }
    }

    fn check_import(&mut self, import: &StmtImport) {
        for alias in &import.names {
            self.check_module(alias.name.as_str(), import.start());
        }
    }

    fn check_import_from(&mut self, import: &StmtImportFrom) {
        let module = import.module.as_ref().map_or("", |m| m.as_str());
        if import.level > 0 {
            let dots = ".".repeat(usize::try_from(import.level).unwrap_or(1));
            self.push(
                import.start(),
                format!(
                    "relative import 'from {dots}{module} import ...' is not allowed \
                     (import an allowed module by its full name)"
                ),
            );
        } else if !module.is_empty() {
            self.check_module(module, import.start());
        }
    }

    /// Runs `f`, one level deeper, on a fresh stack segment if this one is
    /// nearly used up.
    fn nested(&mut self, f: impl FnOnce(&mut Self)) {
        stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || f(self));
    }
}

impl<'a> Visitor<'a> for ImportChecker<'_> {
    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        match stmt {
            Stmt::Import(import) => self.check_import(import),
            Stmt::ImportFrom(import) => self.check_import_from(import),
            _ => {}
        }
        self.nested(|this| walk_stmt(this, stmt));
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        let dunder_import = match expr {
            Expr::Name(name) => name.id.as_str() == "__import__",
            Expr::Attribute(attribute) => attribute.attr.as_str() == "__import__",
            _ => false,
        };
        if dunder_import {
            self.push(
                expr.start(),
                "__import__() is not allowed: dynamic imports are not supported \
                 (use an import statement with an allowed module)"
                    .to_owned(),
            );
        }
        self.nested(|this| walk_expr(this, expr));
    }

    fn visit_pattern(&mut self, pattern: &'a Pattern) {
        self.nested(|this| walk_pattern(this, pattern));
    }
}
