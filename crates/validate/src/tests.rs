//! Unit and property tests for [`validate`](crate::validate).

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

fn findings(code: &str) -> Vec<String> {
    findings_with(code, &Rules::default())
}

fn findings_with(code: &str, rules: &Rules) -> Vec<String> {
    match validate(code, rules) {
        Ok(()) => Vec::new(),
        Err(err) => {
            assert!(!err.findings.is_empty(), "an error carries findings");
            err.findings.iter().map(Finding::to_string).collect()
        }
    }
}

const ALLOWED: &str = "collections, datetime, decimal, functools, itertools, json, math, \
                       matplotlib, numpy, pandas, re, statistics";

#[test]
fn valid_pandas_snippet_passes() {
    let code = "df = load_trades(days=7)\nresult = df.groupby('exchange')['amount'].sum()";
    assert_eq!(validate(code, &Rules::default()), Ok(()));
}

#[test]
fn richer_valid_snippet_passes() {
    let code = r#"
import pandas as pd
import numpy as np
from datetime import datetime, timedelta
import matplotlib.pyplot as plt
from collections.abc import Iterable
import collections.abc

class Summary[T]:
    def total(self, xs: list[T]) -> float:
        return float(np.sum(xs))

type Pair = tuple[int, int]

def top(df: pd.DataFrame, n: int = 5):
    match n:
        case 0:
            return df.head(0)
        case _:
            return df.nlargest(n, "amount")

df = load_trades(days=7)
label = f"{'total'}: {df["amount"].sum():.2f}"
result = top(df)
"#;
    assert_eq!(findings(code), Vec::<String>::new());
}

#[test]
fn syntax_error_has_exact_line_and_column() {
    let code = "x = 1\nif x\n    y = 2\n";
    assert_eq!(
        findings(code),
        vec!["line 2, column 5: Expected `:`, found newline\n    if x\n        ^"]
    );
}

/// Bracket errors in Python's own words and places (checked against
/// CPython 3.11's `compile`), with the line and a caret.
#[test]
fn bracket_errors_read_as_python_says_them() {
    let cases = [
        (
            "df = load_trades(days=7)\nresult = df.groupby('exchange')['amount'].sum(\n",
            "line 2, column 46: '(' was never closed\n    \
             result = df.groupby('exchange')['amount'].sum(\n    \
             \x20                                            ^",
        ),
        ("x = (1, [2,\n", "line 1, column 9: '[' was never closed"),
        ("x = (1,\ny = 2\n", "line 1, column 5: '(' was never closed"),
        ("f(a\nb = 1\n", "line 1, column 2: '(' was never closed"),
        ("print('a'\n", "line 1, column 6: '(' was never closed"),
        (
            "if x:\n  y = (1,\n",
            "line 2, column 7: '(' was never closed",
        ),
        (
            "x = (1, [2)\n",
            "line 1, column 11: closing parenthesis ')' does not match opening parenthesis '['",
        ),
        (
            "d = {'a': 1]\n",
            "line 1, column 12: closing parenthesis ']' does not match opening parenthesis '{'",
        ),
        ("x = 1)\n", "line 1, column 6: unmatched ')'"),
        ("s = '(' + x)\n", "line 1, column 12: unmatched ')'"),
        (
            "import os\nx = (1,\ny = )\nz = ]\n",
            "line 4, column 5: unmatched ']'",
        ),
    ];
    for (code, want) in cases {
        let got = findings(code);
        assert_eq!(got.len(), 1, "{code:?}: {got:?}");
        assert!(
            got[0].starts_with(want),
            "{code:?}:\n{}\nwant\n{want}",
            got[0]
        );
    }
    // A parse error before an open bracket keeps the parser's message.
    let got = findings("x = = 1\ny = (\n");
    assert!(got[0].starts_with("line 1, column 5: "), "{got:?}");
    assert!(!got[0].contains("never closed"), "{got:?}");
}

#[test]
fn the_caret_lines_up_under_tabs_and_wide_characters() {
    let got = findings("if x:\n\ty = ('é→', 2\n");
    assert_eq!(
        got,
        ["line 2, column 6: '(' was never closed\n    \ty = ('é→', 2\n    \t    ^"]
    );
}

#[test]
fn only_the_first_syntax_error_is_reported() {
    let code = "import os\nx = 1 +\ny = 3\nz = 2 +\n";
    let found = findings(code);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("line 2, column 8: "), "{found:?}");
}

#[test]
fn unicode_before_a_syntax_error_counts_characters() {
    // "é" and "→" are 2 and 3 bytes; the stray `)` is the 15th character.
    let code = "x = 'é→é→'  + )\n";
    let found = findings(code);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("line 1, column 15: "), "{found:?}");

    let code = "s = 'naïve'\nt = 'ü' +\n";
    let found = findings(code);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("line 2, column 10: "), "{found:?}");
}

#[test]
fn crlf_line_endings_count_as_one_line() {
    let code = "x = 1\r\ny = 2\r\nimport os\r\n";
    assert_eq!(
        findings(code),
        vec![format!(
            "line 3, column 1: import of 'os' is not allowed (allowed: {ALLOWED})"
        )]
    );
}

#[test]
fn import_os_is_refused_with_position() {
    let code = "import pandas as pd\nx = 1\nimport os\n";
    assert_eq!(
        findings(code),
        vec![format!(
            "line 3, column 1: import of 'os' is not allowed (allowed: {ALLOWED})"
        )]
    );
}

#[test]
fn allowed_imports_pass() {
    for code in [
        "from matplotlib import pyplot as plt",
        "import matplotlib.pyplot as plt",
        "import numpy as np",
        "import collections.abc",
        "from collections.abc import Mapping",
        "import pandas, numpy as np, json",
        "from decimal import *",
    ] {
        assert_eq!(findings(code), Vec::<String>::new(), "{code}");
    }
}

#[test]
fn only_the_top_level_package_counts() {
    // `pandasx` is not `pandas`, and `os.pandas` is under `os`.
    let found = findings("import pandasx\nfrom os import pandas\nimport os.path as p");
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].starts_with("line 1, column 1: import of 'pandasx' is not allowed"));
    assert!(found[1].starts_with("line 2, column 1: import of 'os' is not allowed"));
    assert!(found[2].starts_with("line 3, column 1: import of 'os.path' is not allowed"));
}

#[test]
fn nested_imports_are_refused() {
    let code = "\
def f():
    import subprocess
    return 1

class C:
    if True:
        try:
            from socket import socket
        except Exception:
            with open('x') as fh:
                import sys
";
    let found = findings(code);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].starts_with("line 2, column 5: import of 'subprocess' is not allowed"));
    assert!(found[1].starts_with("line 8, column 13: import of 'socket' is not allowed"));
    assert!(found[2].starts_with("line 11, column 17: import of 'sys' is not allowed"));
}

#[test]
fn dunder_import_is_refused() {
    let found = findings("x = 1\nos = __import__('os')\n");
    assert_eq!(
        found,
        vec![
            "line 2, column 6: __import__() is not allowed: dynamic imports are not supported \
             (use an import statement with an allowed module)"
        ]
    );
}

#[test]
fn dunder_import_is_found_anywhere() {
    let code = "\
f = __import__
g = lambda: builtins.__import__('os')
h = [__import__(m) for m in ['os']]
s = f'{__import__(\"os\")}'
";
    let found = findings(code);
    let positions: Vec<&str> = found
        .iter()
        .map(|f| f.split(": ").next().unwrap_or_default())
        .collect();
    assert_eq!(
        positions,
        vec![
            "line 1, column 5",
            "line 2, column 13",
            "line 3, column 6",
            "line 4, column 8"
        ],
        "{found:?}"
    );
}

#[test]
fn importlib_is_refused_even_if_listed() {
    let mut rules = Rules::default();
    rules.allowed_modules.insert("importlib".to_owned());
    let found = findings_with(
        "import importlib\nfrom importlib import import_module",
        &rules,
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        found[0],
        "line 1, column 1: import of 'importlib' is not allowed: dynamic imports are not \
         supported (import an allowed module directly)"
    );
    assert!(found[1].starts_with("line 2, column 1: import of 'importlib' is not allowed"));
}

#[test]
fn relative_imports_are_refused() {
    let found = findings("from . import x\nfrom ..pkg.mod import y\n");
    assert_eq!(
        found,
        vec![
            "line 1, column 1: relative import 'from . import ...' is not allowed \
             (import an allowed module by its full name)",
            "line 2, column 1: relative import 'from ..pkg.mod import ...' is not allowed \
             (import an allowed module by its full name)",
        ]
    );
}

#[test]
fn multiple_findings_are_all_reported_sorted() {
    // The walk meets the assigned value before the target, and the function
    // body after the statements before it: the report is still in order.
    let code = "\
x[__import__('a')] = __import__('b')
def f():
    import sys
import os, json, socket
";
    let found = findings(code);
    let positions: Vec<&str> = found
        .iter()
        .map(|f| f.split(": ").next().unwrap_or_default())
        .collect();
    assert_eq!(
        positions,
        vec![
            "line 1, column 3",
            "line 1, column 22",
            "line 3, column 5",
            "line 4, column 1",
            "line 4, column 1"
        ],
        "{found:?}"
    );
    assert!(found[3].contains("'os'"));
    assert!(found[4].contains("'socket'"));
}

#[test]
fn empty_code_is_refused() {
    for code in ["", "   \n\t\n", "# just a comment\n\n# another\n"] {
        assert_eq!(
            findings(code),
            vec!["line 1, column 1: the code is empty"],
            "{code:?}"
        );
    }
}

#[test]
fn oversized_code_is_refused() {
    let code = "x = 1\n".repeat(4_000); // 24,000 bytes
    assert_eq!(
        findings(&code),
        vec!["line 1, column 1: the code is 24000 bytes, over the limit of 20000 bytes"]
    );
    let rules = Rules {
        max_code_bytes: 30_000,
        ..Rules::default()
    };
    assert_eq!(findings_with(&code, &rules), Vec::<String>::new());
}

#[test]
fn custom_rules_can_allow_os() {
    let mut rules = Rules::default();
    rules.allowed_modules.insert("os".to_owned());
    assert_eq!(
        findings_with("import os\nfrom os.path import join", &rules),
        Vec::<String>::new()
    );
    assert_eq!(findings_with("import sys", &rules).len(), 1);
}

#[test]
fn empty_allow_list_says_so() {
    let rules = Rules {
        allowed_modules: BTreeSet::new(),
        ..Rules::default()
    };
    assert_eq!(
        findings_with("import pandas", &rules),
        vec!["line 1, column 1: import of 'pandas' is not allowed (no modules are allowed)"]
    );
}

#[test]
fn error_display_lists_every_finding() {
    let err = validate("import os\nimport sys", &Rules::default()).unwrap_err();
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("line 1, column 1: import of 'os'"));
    assert!(lines[1].starts_with("line 2, column 1: import of 'sys'"));
}

/// Runs `validate` on a thread with a small stack: deep inputs must neither
/// overflow it nor depend on the caller having a big stack.
fn validate_on_small_stack(code: String) -> Result<(), ValidationError> {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || validate(&code, &Rules::default()))
        .unwrap()
        .join()
        .unwrap()
}

fn deep_inputs() -> Vec<(&'static str, String)> {
    let n = 9_000;
    let tabs_depth = 190; // 190 nested blocks need ~18,000 tab characters
    let mut nested_defs = String::new();
    for i in 0..tabs_depth {
        nested_defs.push_str(&"\t".repeat(i));
        nested_defs.push_str("if x:\n");
    }
    nested_defs.push_str(&"\t".repeat(tabs_depth));
    nested_defs.push_str("import os\n");
    vec![
        ("parens", format!("{}1{}", "(".repeat(n), ")".repeat(n))),
        ("lists", format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        ("unclosed", "(".repeat(19_000)),
        ("unary", format!("x = {}1", "-".repeat(19_000))),
        ("not", format!("x = {}1", "not ".repeat(4_500))),
        ("binop", format!("x = 1{}", "+1".repeat(9_000))),
        ("attributes", format!("x = a{}", ".b".repeat(9_000))),
        (
            "calls",
            format!("x = {}1{}", "f(".repeat(6_000), ")".repeat(6_000)),
        ),
        (
            "dicts",
            format!("x = {}1{}", "{1:".repeat(4_500), "}".repeat(4_500)),
        ),
        ("lambdas", format!("x = {}1", "lambda:".repeat(2_500))),
        ("ternary", format!("x = 1{}", " if 1 else 1".repeat(1_500))),
        (
            "fstrings",
            format!("x = {}1{}", "f'{".repeat(3_900), "}'".repeat(3_900)),
        ),
        ("awaits", format!("x = {}1", "await ".repeat(3_000))),
        (
            "comprehensions",
            format!("x = {}1{}", "[x for x in ".repeat(1_500), "]".repeat(1_500)),
        ),
        (
            "keywords",
            format!("x = {}1{}", "f(a=".repeat(3_500), ")".repeat(3_500)),
        ),
        ("defaults", format!("x = {}1", "lambda a=".repeat(2_000))),
        (
            "slices",
            format!("x = {}1{}", "a[1:".repeat(3_500), "]".repeat(3_500)),
        ),
        (
            "generators",
            format!("x = {}1{}", "(x for x in ".repeat(1_500), ")".repeat(1_500)),
        ),
        (
            "walrus",
            format!("x = {}1{}", "(a:=".repeat(3_500), ")".repeat(3_500)),
        ),
        (
            "starred_call",
            format!("x = {}1{}", "f(*".repeat(4_500), ")".repeat(4_500)),
        ),
        (
            "kwargs",
            format!("x = {}1{}", "f(**".repeat(3_500), ")".repeat(3_500)),
        ),
        (
            "sets",
            format!("x = {}1{}", "{".repeat(9_000), "}".repeat(9_000)),
        ),
        (
            "tuples",
            format!("x = {}1{}", "(1,".repeat(4_500), ")".repeat(4_500)),
        ),
        (
            "compare",
            format!("x = {}1{}", "(1<".repeat(4_500), ")".repeat(4_500)),
        ),
        (
            "yields",
            format!("x = {}1{}", "(yield ".repeat(2_000), ")".repeat(2_000)),
        ),
        (
            "fstring_spec",
            format!("x = {}1{}", "f'{x:{".repeat(2_000), "}}'".repeat(2_000)),
        ),
        (
            "tstrings",
            format!("x = {}1{}", "t'{".repeat(3_900), "}'".repeat(3_900)),
        ),
        ("stars", format!("x = [{}1]", "*".repeat(19_000))),
        (
            "patterns",
            format!(
                "match x:\n case {}1{}:\n  pass\n",
                "[".repeat(n),
                "]".repeat(n)
            ),
        ),
        ("blocks", nested_defs),
    ]
}

#[test]
fn deep_nesting_neither_panics_nor_overflows() {
    for (name, code) in deep_inputs() {
        assert!(
            code.len() <= DEFAULT_MAX_CODE_BYTES,
            "{name}: {}",
            code.len()
        );
        let result = validate_on_small_stack(code);
        if let Err(err) = &result {
            assert!(!err.to_string().contains("internal error"), "{name}: {err}");
        }
    }
}

#[test]
fn deep_nesting_still_finds_imports() {
    let code = deep_inputs()
        .into_iter()
        .find(|(name, _)| *name == "blocks")
        .map(|(_, code)| code)
        .unwrap();
    let err = validate_on_small_stack(code).unwrap_err();
    assert_eq!(err.findings.len(), 1, "{err}");
    assert_eq!(err.findings[0].line, 191);
    assert_eq!(err.findings[0].column, 191);
}

/// Python-like pieces, glued together at random by the token-soup strategy.
const TOKENS: &[&str] = &[
    "import",
    "from",
    "as",
    "os",
    "pandas",
    ".",
    "..",
    "def",
    "class",
    "if",
    "else",
    "elif",
    "try",
    "except",
    "finally",
    "with",
    "for",
    "in",
    "while",
    "return",
    "yield",
    "lambda",
    "match",
    "case",
    "type",
    "async",
    "await",
    "not",
    "and",
    "or",
    "is",
    "None",
    "True",
    "__import__",
    "importlib",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ":",
    ";",
    ",",
    "=",
    "==",
    "+",
    "-",
    "*",
    "**",
    "/",
    "//",
    "%",
    "@",
    "->",
    ":=",
    "<",
    ">",
    "!",
    "~",
    "|",
    "&",
    "^",
    "\\",
    "'",
    "\"",
    "'''",
    "\"\"\"",
    "f'",
    "f\"",
    "t'",
    "rb'",
    "b'",
    "{x!r:>10}",
    "#",
    "\n",
    "\r\n",
    "\r",
    "\t",
    " ",
    "    ",
    "x",
    "y",
    "_",
    "é",
    "→",
    "🦀",
    "1",
    "0x1f",
    "1e10",
    "1_000",
    "3j",
    "\0",
    "\u{feff}",
    "$",
    "?",
    "`",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..120).prop_map(|tokens| {
        let mut code = String::new();
        for token in tokens {
            code.push_str(token);
            code.push(' ');
        }
        code
    })
}

/// A finding must point inside the snippet (or just past its end).
fn assert_sane(code: &str, result: &Result<(), ValidationError>) {
    if let Err(err) = result {
        assert!(!err.findings.is_empty());
        let lines = code.split('\n').count() + code.matches('\r').count() + 1;
        for finding in &err.findings {
            assert!(finding.line >= 1 && finding.line <= lines, "{finding}");
            assert!(finding.column >= 1 && finding.column <= code.chars().count() + 1);
            assert!(!finding.message.contains("internal error"), "{finding}");
        }
        let mut sorted = err.findings.clone();
        sorted.sort_by_key(|f| (f.line, f.column));
        assert_eq!(sorted, err.findings);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_strings_do_not_panic(code in any::<String>()) {
        // `check` is the part behind `catch_unwind`: call it directly so a
        // parser panic fails the test instead of being turned into a finding.
        if !is_blank(&code) {
            let _ = check(&code, &Rules::default());
        }
        let result = validate(&code, &Rules::default());
        assert_sane(&code, &result);
    }

    #[test]
    fn token_soups_do_not_panic(code in token_soup()) {
        if !is_blank(&code) {
            let _ = check(&code, &Rules::default());
        }
        let result = validate(&code, &Rules::default());
        assert_sane(&code, &result);
    }

    #[test]
    fn indented_token_soups_do_not_panic(
        lines in prop::collection::vec((0usize..6, token_soup()), 0..12)
    ) {
        let code: String = lines
            .into_iter()
            .map(|(indent, line)| format!("{}{}\n", "    ".repeat(indent), line.trim_end()))
            .collect();
        if !is_blank(&code) {
            let _ = check(&code, &Rules::default());
        }
        let result = validate(&code, &Rules::default());
        assert_sane(&code, &result);
    }
}
