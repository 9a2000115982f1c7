//! How a syntax error is shown: Python's own wording for bracket problems
//! (where the parser's is less helpful, e.g. "unexpected EOF while
//! parsing" for a `(` that is never closed), and the offending line with
//! a caret under the column.

use ruff_python_ast::token::{TokenKind, Tokens};
use ruff_text_size::Ranged;

/// The bracket problem behind the parser's error at `error_at` (a byte
/// offset into `code`), as Python words it: first a closer anywhere that
/// matches no opener or not the innermost one (Python's tokenizer reports
/// those before any parse error), else the innermost opener still open when
/// the parser gave up at the end of the code or on a later line. Returns
/// its byte offset and the message.
pub(crate) fn bracket_problem(
    tokens: &Tokens,
    code: &str,
    error_at: usize,
) -> Option<(usize, String)> {
    let mut open: Vec<(char, usize)> = Vec::new();
    for token in tokens.iter() {
        let at = token.start().to_usize();
        let close = match token.kind() {
            TokenKind::Lpar => {
                open.push(('(', at));
                continue;
            }
            TokenKind::Lsqb => {
                open.push(('[', at));
                continue;
            }
            TokenKind::Lbrace => {
                open.push(('{', at));
                continue;
            }
            TokenKind::Rpar => ')',
            TokenKind::Rsqb => ']',
            TokenKind::Rbrace => '}',
            _ => continue,
        };
        match open.pop() {
            None => return Some((at, format!("unmatched '{close}'"))),
            Some((opener, _)) if partner(opener) != close => {
                let message = format!("closing parenthesis '{close}' does not match ");
                return Some((at, message + &format!("opening parenthesis '{opener}'")));
            }
            Some(_) => {}
        }
    }
    // Still open: Python says so when its parser ran into the end of the
    // code inside the bracket; the parser here may stop at the first line
    // that cannot continue the bracket's contents, so a later line counts.
    let (opener, at) = open.pop()?;
    let at_end = error_at >= code.trim_end().len();
    let later_line = code
        .get(at..error_at)
        .is_some_and(|between| between.contains('\n'));
    (error_at >= at && (at_end || later_line)).then(|| (at, format!("'{opener}' was never closed")))
}

fn partner(opener: char) -> char {
    match opener {
        '(' => ')',
        '[' => ']',
        _ => '}',
    }
}

/// The 1-based `line` of `code` and, below it, a caret under the 1-based
/// `column` (in characters; tabs are kept so the caret lines up); `None`
/// for an empty line or one past the end.
pub(crate) fn excerpt(code: &str, line: usize, column: usize) -> Option<String> {
    let text = code.lines().nth(line.checked_sub(1)?)?;
    let text = text.trim_end();
    if text.is_empty() {
        return None;
    }
    let pad: String = text
        .chars()
        .take(column.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    Some(format!("{text}\n{pad}^"))
}
