//! Values quoted the way Prometheus' (Go's) messages quote them, so that
//! `unexpected character: '$'` reads the same from both.

/// Printable in Go's sense (approximately: the one space, no controls).
fn printable(c: char) -> bool {
    c == ' ' || !(c.is_control() || c.is_whitespace())
}

fn push_escaped(out: &mut String, c: char, quote: char) {
    if c == quote || c == '\\' {
        out.push('\\');
        out.push(c);
        return;
    }
    if printable(c) {
        out.push(c);
        return;
    }
    match c {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
            out.push_str(&format!("\\x{:02x}", c as u32));
        }
        c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push_str(&format!("\\U{:08x}", c as u32)),
    }
}

/// `"text"` with Go's escapes (`%q` of a string).
pub(super) fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        push_escaped(&mut out, c, '"');
    }
    out.push('"');
    out
}

/// `'c'` with Go's escapes (`%q` of a rune); the end of input reads as
/// U+FFFD, as in Go.
pub(super) fn go_rune(c: Option<char>) -> String {
    let mut out = String::from('\'');
    push_escaped(&mut out, c.unwrap_or('\u{FFFD}'), '\'');
    out.push('\'');
    out
}

/// `U+0071 'q'` (Go's `%#U`).
pub(super) fn go_rune_unicode(c: char) -> String {
    if printable(c) {
        format!("U+{:04X} '{c}'", c as u32)
    } else {
        format!("U+{:04X}", c as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        let check = |got: String, want: &str| assert_eq!(got, want);
        check(go_quote("a\"b\\c\nd\u{1}é"), r#""a\"b\\c\nd\x01é""#);
        check(go_rune(Some('$')), "'$'");
        check(go_rune(Some('\'')), r"'\''");
        check(go_rune(Some('"')), "'\"'");
        check(go_rune(Some('ü')), "'ü'");
        check(go_rune(Some('\t')), r"'\t'");
        check(go_rune(None), "'\u{FFFD}'");
        check(go_rune_unicode('q'), "U+0071 'q'");
        check(go_rune_unicode('\''), "U+0027 '''");
        check(go_rune_unicode('\n'), "U+000A");
    }
}
