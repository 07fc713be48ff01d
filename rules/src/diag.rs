//! Diagnostics: every problem in a pack, each with its position in the source.

use std::fmt;
use std::ops::Range;

/// One problem found in a rule pack, located by byte span in the pack's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line of the span's start.
    pub line: usize,
    /// 1-based column (in characters) of the span's start.
    pub col: usize,
    /// What is wrong, naming the field and the bad value.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

/// Collects diagnostics against one source text.
pub(crate) struct Diags<'s> {
    source: &'s str,
    pub(crate) items: Vec<Diagnostic>,
    /// Keys of the table being compiled whose values were malformed (already reported).
    pub(crate) bad_keys: Vec<String>,
}

impl<'s> Diags<'s> {
    pub(crate) fn new(source: &'s str) -> Self {
        Diags {
            source,
            items: Vec::new(),
            bad_keys: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.source, span.start);
        self.items.push(Diagnostic {
            line,
            col,
            message: message.into(),
        });
    }

    pub(crate) fn push_toml(&mut self, err: &toml::de::Error) {
        let span = err.span().unwrap_or(0..0);
        // toml's messages may span lines; keep the first, which names the problem.
        let msg = err.message().trim().lines().next().unwrap_or("invalid TOML").to_string();
        self.push(span, msg);
    }

    pub(crate) fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by_key(|a| (a.line, a.col));
        self.items.dedup();
        self.items
    }
}

/// 1-based line and character column of byte offset `at` in `source`.
pub fn line_col(source: &str, at: usize) -> (usize, usize) {
    let at = at.min(source.len());
    let before = &source[..at];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = source[line_start..at].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let s = "a = 1\nsig = \"京东\" x";
        assert_eq!(line_col(s, 0), (1, 1));
        assert_eq!(line_col(s, 6), (2, 1));
        let x = s.find('x').unwrap();
        assert_eq!(line_col(s, x), (2, 12));
    }
}
