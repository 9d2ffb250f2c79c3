//! CoRE link format (RFC 6690): the writer a device's `/.well-known/core` uses and the reader a
//! client (the simulator's probe) applies to what an endpoint answers.
//!
//! A document is links separated by commas; a link is `<target>` followed by `;name` or
//! `;name=value` attributes. A value is a token or a quoted string (`\"` and `\\` escaped).
//! Commas and semicolons inside `<…>` or inside quotes do not separate anything.
//!
//! [`write`] quotes every value that is not all ASCII digits (so `ct=0`, `rt="valve"`), and
//! [`parse`] reads back what [`write`] wrote: `parse(&write(links)) == Some(links)` whenever
//! every target is free of `>` and every attribute name is a non-empty token
//! ([`is_token`]).

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

/// One link: its target and its attributes in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The target between `<` and `>`, e.g. `/sensors/temp`.
    pub target: String,
    /// The attributes, in the order they appear.
    pub attrs: Vec<Attr>,
}

/// One attribute of a link: `name` alone or `name=value`; the value without its quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// The attribute's name, e.g. `rt`.
    pub name: String,
    /// Its value, unquoted and unescaped; `None` for a bare `;obs`.
    pub value: Option<String>,
}

impl Link {
    /// A link to `target` without attributes.
    pub fn new(target: impl Into<String>) -> Link {
        Link {
            target: target.into(),
            attrs: Vec::new(),
        }
    }

    /// Adds `name=value` (or `name` alone for `None`).
    pub fn attr(mut self, name: &str, value: Option<&str>) -> Link {
        self.attrs.push(Attr {
            name: name.to_owned(),
            value: value.map(ToOwned::to_owned),
        });
        self
    }

    /// The link has the attribute `name` (with or without a value).
    pub fn has(&self, name: &str) -> bool {
        self.attrs.iter().any(|a| a.name == name)
    }

    /// The value of the first attribute `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.value.as_deref())
    }
}

/// An attribute name this module writes and reads back unchanged: non-empty, ASCII letters,
/// digits and `!#$&+-.^_`|~` (RFC 6690's `parmname` is a subset).
pub fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b))
}

/// Appends one link to `out` (no separating comma).
pub fn write_link(out: &mut String, link: &Link) {
    out.push('<');
    out.push_str(&link.target);
    out.push('>');
    for a in &link.attrs {
        out.push(';');
        out.push_str(&a.name);
        let Some(v) = &a.value else { continue };
        out.push('=');
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(v);
            continue;
        }
        out.push('"');
        for c in v.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
}

/// The document of `links`, separated by commas.
pub fn write(links: &[Link]) -> String {
    let mut out = String::new();
    for (i, l) in links.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_link(&mut out, l);
    }
    out
}

/// The links of a link-format document; `None` when it is not link format (a non-empty piece
/// that does not start with `<…>`, an attribute name that is not a token, an unterminated
/// quote or target). Whitespace around links and attributes is ignored; empty pieces (`a,,b`) are
/// skipped.
pub fn parse(text: &str) -> Option<Vec<Link>> {
    let mut links = Vec::new();
    for piece in split_outside(text, ',')? {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        let inner = piece.strip_prefix('<')?;
        let (target, rest) = inner.split_once('>')?;
        let rest = rest.trim_start();
        let mut attrs = Vec::new();
        if !rest.is_empty() {
            let rest = rest.strip_prefix(';')?;
            for a in split_outside(rest, ';')? {
                attrs.push(parse_attr(a.trim())?);
            }
        }
        links.push(Link {
            target: target.to_owned(),
            attrs,
        });
    }
    Some(links)
}

fn parse_attr(a: &str) -> Option<Attr> {
    let (name, value) = match a.split_once('=') {
        Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
        None => (a, None),
    };
    if !is_token(name) {
        return None;
    }
    Some(Attr {
        name: name.to_owned(),
        value,
    })
}

/// A token as is; a quoted string without its quotes and escapes.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        return Some(v.to_owned());
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            // the closing quote must end the value
            '"' => return chars.next().is_none().then_some(out),
            c => out.push(c),
        }
    }
    None
}

/// `text` split at `sep` where it is neither inside `<…>` nor inside a quoted string; `None`
/// when a quote or a `<` is still open at the end.
fn split_outside(text: &str, sep: char) -> Option<Vec<&str>> {
    let mut pieces = Vec::new();
    let (mut start, mut quoted, mut escaped, mut angle) = (0, false, false, false);
    for (i, c) in text.char_indices() {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '<' if !angle => angle = true,
            '>' if angle => angle = false,
            '"' if !angle => quoted = true,
            c if c == sep && !angle => {
                pieces.push(text.get(start..i)?);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if quoted || angle {
        return None;
    }
    pieces.push(text.get(start..)?);
    Some(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    #[test]
    fn reads_rfc6690_examples_and_libcoap_answers() {
        let l =
            parse("</>;title=\"General, Info\";ct=0,</time>;if=\"clock\";rt=\"ticks\";obs,</a>")
                .unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].target, "/");
        assert_eq!(l[0].value("title"), Some("General, Info"));
        assert_eq!(l[0].value("ct"), Some("0"));
        assert!(!l[0].has("obs"));
        assert_eq!(l[1].target, "/time");
        assert!(l[1].has("obs"));
        assert_eq!(l[1].value("obs"), None);
        assert_eq!(l[2], Link::new("/a"));
        // RFC 6690 §5 example, with the whitespace it allows
        let l = parse("</sensors/temp>;rt=\"temperature-c\";if=\"sensor\",\n</sensors/light>;rt=\"light-lux\";if=\"sensor\"").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].value("rt"), Some("light-lux"));
        // a comma and a semicolon inside the target
        assert_eq!(
            parse("<a,b;c>;x").unwrap(),
            vec![Link::new("a,b;c").attr("x", None)]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse(" , ").unwrap(), vec![]);
    }

    #[test]
    fn rejects_what_is_not_link_format() {
        for bad in [
            "hello world",
            "</a",
            "</a>;rt=\"open",
            "</a>;=1",
            "</a>;rt=\"x\"y",
            "</a>junk",
            "</a>,b",
            "</a>;rt=\"\\",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn writes_digits_bare_and_everything_else_quoted_and_escaped() {
        let l = Link::new("/v")
            .attr("ct", Some("0"))
            .attr("rt", Some("a\"b\\c,d;e"))
            .attr("t", Some(""))
            .attr("obs", None);
        let text = write(&[l.clone(), Link::new("/w")]);
        assert_eq!(text, "</v>;ct=0;rt=\"a\\\"b\\\\c,d;e\";t=\"\";obs,</w>");
        assert_eq!(parse(&text).unwrap(), vec![l, Link::new("/w")]);
    }

    fn arb_link() -> impl Strategy<Value = Link> {
        let attr = (
            "[a-z0-9!#$&+.^_`|~-]{1,6}",
            proptest::option::of(any::<String>()),
        )
            .prop_map(|(name, value)| Attr { name, value });
        ("[^>]{0,12}", proptest::collection::vec(attr, 0..4))
            .prop_map(|(target, attrs)| Link { target, attrs })
    }

    proptest! {
        #[test]
        fn parse_reads_back_what_write_wrote(links in proptest::collection::vec(arb_link(), 0..5)) {
            prop_assert_eq!(parse(&write(&links)), Some(links));
        }

        #[test]
        fn parse_never_panics_and_its_links_round_trip(text in any::<String>()) {
            if let Some(links) = parse(&text) {
                let again = parse(&write(&links));
                prop_assert_eq!(again, Some(links));
            }
        }
    }
}
