//! Turning parser byte offsets into the 1-based line and column numbers shown to users.
//!
//! Columns count characters (Unicode scalar values), not bytes, so a snippet
//! with `é` or `→` before an error still points at the right place. Lines end
//! at `\n`, `\r\n` or a lone `\r`, as in Python's tokenizer, and a leading
//! byte-order mark takes no column.

const BOM: char = '\u{feff}';

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineColumn {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// Walks `code` once, answering positions for offsets given in ascending order.
///
/// Offsets past the end are clamped to the end, and an offset inside a
/// multi-byte character is moved back to that character's start, so no
/// input can make it panic.
pub(crate) struct PositionCursor<'a> {
    code: &'a str,
    /// Byte offset reached so far (always on a character boundary).
    offset: usize,
    line: usize,
    column: usize,
    /// Whether the character just before `offset` was a `\r`, so that a
    /// following `\n` does not start a second line.
    after_cr: bool,
}

impl<'a> PositionCursor<'a> {
    pub(crate) fn new(code: &'a str) -> Self {
        Self {
            code,
            offset: if code.starts_with(BOM) {
                BOM.len_utf8()
            } else {
                0
            },
            line: 1,
            column: 1,
            after_cr: false,
        }
    }

    /// The position of byte `target`. If `target` is before the last offset
    /// asked for, the cursor starts again from the beginning.
    pub(crate) fn position(&mut self, target: usize) -> LineColumn {
        let mut target = target.min(self.code.len());
        while !self.code.is_char_boundary(target) {
            target -= 1;
        }
        if target < self.offset {
            *self = Self::new(self.code);
        }
        let rest = self.code.get(self.offset..target).unwrap_or_default();
        for ch in rest.chars() {
            match ch {
                '\n' if self.after_cr => {
                    // Second half of a `\r\n`: the line was already counted.
                    self.after_cr = false;
                }
                '\n' | '\r' => {
                    self.line += 1;
                    self.column = 1;
                    self.after_cr = ch == '\r';
                }
                _ => {
                    self.column += 1;
                    self.after_cr = false;
                }
            }
        }
        self.offset = target;
        LineColumn {
            line: self.line,
            column: self.column,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(code: &str, offset: usize) -> (usize, usize) {
        let pos = PositionCursor::new(code).position(offset);
        (pos.line, pos.column)
    }

    #[test]
    fn start_is_line_one_column_one() {
        assert_eq!(at("", 0), (1, 1));
        assert_eq!(at("abc", 0), (1, 1));
    }

    #[test]
    fn counts_characters_not_bytes() {
        // "é" is two bytes, "→" three: the `x` is the 3rd character.
        let code = "é→x";
        assert_eq!(at(code, code.find('x').unwrap()), (1, 3));
    }

    #[test]
    fn handles_all_line_endings() {
        assert_eq!(at("a\nbc", 3), (2, 2));
        assert_eq!(at("a\r\nbc", 4), (2, 2));
        assert_eq!(at("a\rbc", 3), (2, 2));
        assert_eq!(at("a\n\nb", 3), (3, 1));
        assert_eq!(at("a\r\rb", 3), (3, 1));
    }

    #[test]
    fn leading_bom_takes_no_column() {
        assert_eq!(at("\u{feff}x+)", 5), (1, 3));
        assert_eq!(at("\u{feff}x", 0), (1, 1));
    }

    #[test]
    fn clamps_bad_offsets() {
        assert_eq!(at("ab", 99), (1, 3));
        // Offset 1 is inside "é": moved back to its start.
        assert_eq!(at("é", 1), (1, 1));
    }

    #[test]
    fn ascending_and_descending_queries_agree() {
        let code = "x = 1\ny = 'é'\nz = 3\n";
        let mut cursor = PositionCursor::new(code);
        let forward: Vec<_> = (0..=code.len()).map(|o| cursor.position(o)).collect();
        for (offset, expected) in forward.iter().enumerate().rev() {
            assert_eq!(cursor.position(offset), *expected);
        }
    }
}
