//! Policy variables, as AWS has them in policies of `"Version": "2012-10-17"`: `${key}`
//! in a `Resource` (or `NotResource`) or in a value of a string condition stands for the
//! value the request has for the condition key `key` (`${aws:username}`,
//! `${aws:SourceIp}`, ...; names compare case-insensitively). `${key, 'default'}` gives the
//! text used when the request has no such key (`''` in it is one `'`). `${*}`, `${?}` and
//! `${$}` are the characters `*`, `?` and `$` themselves, never wildcards. A substituted
//! value never acts as a wildcard either: a user named `*` is not everyone.
//!
//! A variable the request has no value for (and no default) resolves to nothing: the
//! statement it is in does not apply (see `Statement::applies`).

use super::condition::{Context, KEYS};
use super::wildcard::{self, Token};

/// One piece of a value as written.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// Text as written: `*` and `?` in it are wildcards.
    Text(String),
    /// `${*}`, `${?}`, `${$}`: that character itself.
    Escaped(char),
    /// `${key}` or `${key, 'default'}`; `key` lowercase.
    Variable {
        key: String,
        default: Option<String>,
    },
}

/// A Resource or condition value, split into text, escapes and variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    text: String,
    pieces: Vec<Piece>,
}

impl Template {
    /// Splits `text`. The error names the bad variable and the fix.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_owned()));
            }
            let inner_and_after = &rest[start + 2..];
            let end = closing_brace(inner_and_after).ok_or_else(|| {
                format!(
                    "unterminated policy variable in {text:?}: write ${{key}}, \
                     or ${{$}} for a literal $"
                )
            })?;
            pieces.push(piece(&inner_and_after[..end], text)?);
            rest = &inner_and_after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template {
            text: text.to_owned(),
            pieces,
        })
    }

    /// `text` as it stands, `${...}` and all: a value of a policy older than 2012-10-17,
    /// where AWS reads no variables.
    pub fn literal(text: &str) -> Self {
        let pieces = if text.is_empty() {
            Vec::new()
        } else {
            vec![Piece::Text(text.to_owned())]
        };
        Template {
            text: text.to_owned(),
            pieces,
        }
    }

    /// The value as written in the policy.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the value has a `${...}` in it (a variable or an escape).
    pub fn has_dollar_braces(&self) -> bool {
        self.pieces.iter().any(|p| !matches!(p, Piece::Text(_)))
    }

    /// Whether the value has a variable (escapes do not count).
    pub fn has_variables(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Variable { .. }))
    }

    /// The pattern this value stands for in a request with `cx`; `None` when a variable
    /// has no value there and no default.
    pub fn resolve(&self, cx: &Context) -> Option<Vec<Token>> {
        let mut out = Vec::with_capacity(self.text.len());
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.extend(wildcard::tokens(t)),
                Piece::Escaped(c) => out.push(Token::Char(*c)),
                Piece::Variable { key, default } => {
                    let value = cx.get(key).or(default.as_deref())?;
                    out.extend(value.chars().map(Token::Char));
                }
            }
        }
        Some(out)
    }

    /// The text this value stands for in a request with `cx`, every wildcard taken as the
    /// character it is written with (as StringEquals compares); `None` as [`Self::resolve`].
    pub fn resolve_text(&self, cx: &Context) -> Option<String> {
        let tokens = self.resolve(cx)?;
        Some(
            tokens
                .into_iter()
                .map(|t| match t {
                    Token::Any => '*',
                    Token::One => '?',
                    Token::Char(c) => c,
                })
                .collect(),
        )
    }
}

/// Where the `}` closing a variable is in `s` (which starts after its `${`): the first
/// one outside a quoted default.
fn closing_brace(s: &str) -> Option<usize> {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn piece(inner: &str, text: &str) -> Result<Piece, String> {
    match inner {
        "*" => return Ok(Piece::Escaped('*')),
        "?" => return Ok(Piece::Escaped('?')),
        "$" => return Ok(Piece::Escaped('$')),
        _ => {}
    }
    let (key, default) = match inner.split_once(',') {
        None => (inner.trim(), None),
        Some((key, default)) => {
            let default = default.trim();
            let quoted = default
                .strip_prefix('\'')
                .and_then(|d| d.strip_suffix('\''))
                .filter(|d| !d.replace("''", "").contains('\''));
            let Some(quoted) = quoted else {
                return Err(format!(
                    "bad default in policy variable ${{{inner}}} of {text:?}: \
                     write ${{key, 'default'}} (a ' inside the default written '')"
                ));
            };
            (key.trim(), Some(quoted.replace("''", "'")))
        }
    };
    let lower = key.to_ascii_lowercase();
    if !KEYS.contains(&lower.as_str()) {
        return Err(format!(
            "invalid policy variable ${{{key}}} in {text:?} (sublet knows {}; \
             ${{*}}, ${{?}} and ${{$}} stand for those characters)",
            KEYS.join(", ")
        ));
    }
    Ok(Piece::Variable {
        key: lower,
        default,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cx(pairs: &[(&str, &str)]) -> Context {
        let mut c = Context::default();
        for (k, v) in pairs {
            c.set(k, *v);
        }
        c
    }

    fn text(t: &str, c: &Context) -> Option<String> {
        Template::parse(t).unwrap().resolve_text(c)
    }

    #[test]
    fn variables_take_the_requests_values() {
        let alice = cx(&[("aws:username", "alice"), ("aws:SourceIp", "10.1.2.3")]);
        assert_eq!(
            text("arn:aws:s3:::b/home/${aws:username}/*", &alice).unwrap(),
            "arn:aws:s3:::b/home/alice/*"
        );
        // Names compare case-insensitively; spaces around them are ignored.
        assert_eq!(
            text("${ AWS:UserName }@${aws:sourceip}", &alice).unwrap(),
            "alice@10.1.2.3"
        );
        assert_eq!(text("plain", &alice).unwrap(), "plain");
        assert!(!Template::parse("plain").unwrap().has_dollar_braces());
    }

    #[test]
    fn a_missing_value_resolves_to_nothing_unless_defaulted() {
        let anonymous = Context::default();
        assert_eq!(text("home/${aws:username}/*", &anonymous), None);
        assert_eq!(
            text("home/${aws:username, 'guest'}/*", &anonymous).unwrap(),
            "home/guest/*"
        );
        assert_eq!(
            text("${aws:username,'it''s, {x}'}", &anonymous).unwrap(),
            "it's, {x}"
        );
        // The default is not used when there is a value.
        let bob = cx(&[("aws:username", "bob")]);
        assert_eq!(text("${aws:username, 'guest'}", &bob).unwrap(), "bob");
    }

    #[test]
    fn escapes_and_substituted_values_are_never_wildcards() {
        let star = cx(&[("aws:username", "*")]);
        let t = Template::parse("arn:aws:s3:::b/${aws:username}/*").unwrap();
        let pattern = t.resolve(&star).unwrap();
        assert!(wildcard::matches_tokens(
            &pattern,
            "arn:aws:s3:::b/*/x",
            false
        ));
        assert!(!wildcard::matches_tokens(
            &pattern,
            "arn:aws:s3:::b/alice/x",
            false
        ));
        let t = Template::parse("a${*}b${?}${$}c*").unwrap();
        assert!(t.has_dollar_braces() && !t.has_variables());
        let pattern = t.resolve(&Context::default()).unwrap();
        assert!(wildcard::matches_tokens(&pattern, "a*b?$cdef", false));
        assert!(!wildcard::matches_tokens(&pattern, "axb?$c", false));
        assert!(!wildcard::matches_tokens(&pattern, "a*bx$c", false));
    }

    #[test]
    fn bad_variables_are_named() {
        let err = |t: &str| Template::parse(t).unwrap_err();
        assert!(err("home/${aws:username").contains("unterminated"));
        assert!(err("${aws:PrincipalTag/team}").contains("invalid policy variable"));
        assert!(err("${}").contains("invalid policy variable"));
        assert!(err("${aws:username, guest}").contains("bad default"));
        assert!(err("${aws:username, 'a'b}").contains("bad default"));
        assert!(err("${aws:username, 'a'b'}").contains("unterminated"));
    }

    proptest::proptest! {
        /// Any text parses or is refused, never panics; what parses resolves.
        #[test]
        fn parsing_never_panics(text in "[$\\{\\}'*?, a:usernme]{0,30}") {
            if let Ok(t) = Template::parse(&text) {
                let _ = t.resolve(&cx(&[("aws:username", "u")]));
                let _ = t.resolve(&Context::default());
            }
        }

        /// Substitution is literal: the resolved pattern matches exactly the text with the
        /// user's name put in, whatever characters the name has.
        #[test]
        fn a_user_matches_only_their_own_home(
            user in "[a-c*?$/]{1,6}",
            other in "[a-c*?$/]{1,6}",
            rest in "[a-c/]{0,6}",
        ) {
            let c = cx(&[("aws:username", user.as_str())]);
            let t = Template::parse("home/${aws:username}/*").unwrap();
            let pattern = t.resolve(&c).unwrap();
            let mine = format!("home/{user}/{rest}");
            proptest::prop_assert!(wildcard::matches_tokens(&pattern, &mine, false));
            let theirs = format!("home/{other}/{rest}");
            let expected = theirs.starts_with(&format!("home/{user}/"));
            proptest::prop_assert_eq!(wildcard::matches_tokens(&pattern, &theirs, false), expected);
        }
    }
}
