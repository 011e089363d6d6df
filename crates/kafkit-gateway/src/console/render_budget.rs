//! [`RenderBudget`]: how much record text one console page (or export) renders. Reading is
//! bounded in stored bytes ([`crate::reads::browse::MAX_BROWSE_BYTES`]), but what a page shows
//! can be larger than what it read: hex is three times the bytes, HTML escapes `"` in six, and
//! indented JSON grows without bound with nesting (bounded per value by
//! [`super::messages::Format::show`]). The budget counts what is shown, as escaped, and cuts
//! the rest, saying so.

use maud::{Markup, html};

/// Most bytes of record text (keys, header values, values, HTML-escaped) one page shows, and
/// most bytes of records one export holds: twice what a browse reads, room for the indentation
/// of ordinary JSON.
pub const MAX_RENDERED_BYTES: usize = 16 << 20;

/// What is left of a page's [`MAX_RENDERED_BYTES`].
#[derive(Debug)]
pub struct RenderBudget {
    left: usize,
}

impl Default for RenderBudget {
    fn default() -> Self {
        RenderBudget::new(MAX_RENDERED_BYTES)
    }
}

impl RenderBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        RenderBudget { left: bytes }
    }

    /// True once nothing is left: what would be shown need not be computed.
    pub fn spent(&self) -> bool {
        self.left == 0
    }

    /// Takes `bytes` when they are left (an export's record, whole or not at all).
    pub fn take(&mut self, bytes: usize) -> bool {
        let fits = bytes <= self.left;
        if fits {
            self.left -= bytes;
        }
        fits
    }

    /// The start of `text` the budget holds (counted as HTML-escaped), and whether the rest
    /// was cut.
    pub fn fit<'a>(&mut self, text: &'a str) -> (&'a str, bool) {
        let mut used = 0;
        for (at, c) in text.char_indices() {
            let size = escaped_len(c);
            if used + size > self.left {
                self.left = 0;
                return (&text[..at], true);
            }
            used += size;
        }
        self.left -= used;
        (text, false)
    }

    /// `text` as far as the budget holds it, followed by a note when it was cut.
    pub fn show(&mut self, text: &str) -> Markup {
        let (part, cut) = self.fit(text);
        html! {
            (part)
            @if cut {
                span.note.cut { " … cut: a page shows at most " (MAX_RENDERED_BYTES >> 20) " MiB of record text; browse fewer records to see this one whole" }
            }
        }
    }
}

/// The bytes `c` takes once maud escaped it.
fn escaped_len(c: char) -> usize {
    match c {
        '&' => "&amp;".len(),
        '<' => "&lt;".len(),
        '>' => "&gt;".len(),
        '"' => "&quot;".len(),
        _ => c.len_utf8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_counted_as_escaped_and_cut_where_the_budget_ends() {
        let mut budget = RenderBudget::new(20);
        assert_eq!(budget.fit("héllo"), ("héllo", false));
        // 14 left: two quotes take 12, the third does not fit.
        assert_eq!(budget.fit("\"\"\"x"), ("\"\"", true));
        assert!(budget.spent());
        assert_eq!(budget.fit("more"), ("", true));
        let shown = RenderBudget::new(3).show("abcdef").into_string();
        assert!(shown.starts_with("abc<span class=\"note cut\">"), "{shown}");
        let mut records = RenderBudget::new(10);
        assert!(records.take(6) && !records.take(6) && records.take(4));
    }
}
