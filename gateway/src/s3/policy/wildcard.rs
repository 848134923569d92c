//! The wildcards of the policy language: `*` any run of characters (none included), `?`
//! exactly one character; everything else stands for itself.

/// One element of a pattern: `*`, `?` or a character that stands for itself (a `*` or `?`
/// written `${*}`, `${?}` or substituted from a policy variable is a [`Token::Char`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// `*`: any run of characters, none included.
    Any,
    /// `?`: exactly one character.
    One,
    Char(char),
}

/// The tokens of `pattern` as written: every `*` and `?` is a wildcard.
pub fn tokens(pattern: &str) -> Vec<Token> {
    pattern
        .chars()
        .map(|c| match c {
            '*' => Token::Any,
            '?' => Token::One,
            c => Token::Char(c),
        })
        .collect()
}

/// Whether `text` matches `pattern`, comparing characters as given (`fold`: ASCII case
/// folded, as action names are compared). Linear in memory, at most
/// `pattern.len() * text.len()` steps (one backtrack point, the last `*`).
pub fn matches(pattern: &str, text: &str, fold: bool) -> bool {
    matches_tokens(&tokens(pattern), text, fold)
}

/// [`matches`] for a pattern already split into tokens.
pub fn matches_tokens(p: &[Token], text: &str, fold: bool) -> bool {
    let t: Vec<char> = text.chars().collect();
    let same = |a: char, b: char| {
        if fold {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was and the text position it now stands for up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(Token::Any) => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(Token::One) => {
                pi += 1;
                ti += 1;
            }
            Some(&Token::Char(c)) if same(c, t[ti]) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry after it.
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == Token::Any)
}

/// Whether `pattern` holds a wildcard.
pub fn has_wildcard(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious recursive definition the fast matcher must agree with.
    fn reference(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
            Some((&c, rest)) => {
                t.first().is_some_and(|&x| c == '?' || c == x) && reference(rest, &t[1..])
            }
        }
    }

    #[test]
    fn examples() {
        assert!(matches(
            "arn:aws:s3:::photos/*",
            "arn:aws:s3:::photos/a/b.jpg",
            false
        ));
        assert!(matches(
            "arn:aws:s3:::photos/*",
            "arn:aws:s3:::photos/",
            false
        ));
        assert!(!matches(
            "arn:aws:s3:::photos/*",
            "arn:aws:s3:::photos",
            false
        ));
        assert!(matches("s3:Get*", "s3:getobject", true));
        assert!(!matches("s3:Get*", "s3:getobject", false));
        assert!(matches("a?c", "abc", false));
        assert!(!matches("a?c", "ac", false));
        assert!(matches("*", "", false));
        assert!(matches("**a**", "xxa", false));
        assert!(!matches("", "x", false));
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_the_reference(p in "[ab*?/]{0,8}", t in "[ab/]{0,10}") {
            let pc: Vec<char> = p.chars().collect();
            let tc: Vec<char> = t.chars().collect();
            proptest::prop_assert_eq!(matches(&p, &t, false), reference(&pc, &tc), "{} vs {}", p, t);
        }

        #[test]
        fn a_pattern_without_wildcards_matches_only_itself(p in "[a-z/]{0,8}", t in "[a-z/]{0,8}") {
            proptest::prop_assert_eq!(matches(&p, &t, false), p == t);
        }
    }
}
