//! Escaping for everything a record carries into the page: probe names,
//! flows, observations and details come from the network, so every one is
//! escaped where it is written, as text or as a quoted attribute value.
//!
//! Hand-written rather than a template crate (maud, askama): the page is a
//! few hundred lines of markup built from plain strings, and one function
//! that escapes the five significant characters is all the safety a
//! template engine would add here, without a proc-macro in the build.

use std::fmt::Write as _;

/// `s` with `& < > " '` replaced by entities: safe as element text and as
/// a double- or single-quoted attribute value. Control characters other
/// than tab and newline become U+FFFD (they are not allowed in HTML).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// An id usable as an in-page anchor for `kind` and `key`: letters, digits
/// and `-` only (anything else becomes its hex code), so two keys never
/// share an anchor and no anchor needs escaping.
pub fn anchor(kind: &str, key: &str) -> String {
    let mut out = String::with_capacity(kind.len() + key.len() + 1);
    out.push_str(kind);
    out.push('-');
    for c in key.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c);
        } else {
            // `_` starts an escape, so "a/b" and "a_2fb" cannot collide.
            let _ = write!(out, "_{:x}", u32::from(c));
        }
    }
    out
}

/// A relative file path as a URL path: unreserved characters, `/`, `@`
/// and `.` kept, everything else percent-encoded (a `#` or `?` in a file
/// name must not end the path, a space must not break the attribute).
pub fn url_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/' | b'@') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_a_record_stays_text() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(escape("a\u{0}b\tc"), "a\u{fffd}b\tc");
    }

    #[test]
    fn anchors_are_plain_and_distinct() {
        assert_eq!(anchor("obs", "node-2/eth0"), "obs-node-2_2feth0");
        assert_ne!(anchor("obs", "a/b"), anchor("obs", "a_2fb"));
        assert!(
            anchor("obs", "x\" onclick=\"y")
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn file_names_become_url_paths() {
        assert_eq!(
            url_path("r1/node-2@pod-default-web-0.pcapng"),
            "r1/node-2@pod-default-web-0.pcapng"
        );
        assert_eq!(url_path("a b#?.pcapng"), "a%20b%23%3F.pcapng");
    }
}
