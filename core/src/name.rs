//! Validated names. Names end up in file paths, SQL rows, URLs and metric labels, so
//! the rules are strict: this is the first line of defence against path traversal. Tags
//! are the exception: they are only ever values (rows, escaped in pages and URLs), so
//! they may be any printable text (see [`Rule::Text`]).

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Longest name accepted, in bytes (all names but tags are ASCII, so also in characters).
pub const MAX_NAME_LEN: usize = 64;
/// Longest tag accepted, in bytes of UTF-8.
pub const MAX_TAG_LEN: usize = 256;

/// The two character rules names follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// `[A-Za-z_][A-Za-z0-9_]*`: flows, steps, artifacts, parameters, plans.
    Identifier,
    /// `[A-Za-z0-9_][A-Za-z0-9_.-]*` without `..`: labels of launch plans, which
    /// `--label k=v` selects by, such as `team=sync` or `tier=v1.2`.
    Word,
    /// Printable text in any script, spaces inside allowed, at most [`MAX_TAG_LEN`]
    /// bytes: tags, which people write as they speak (`刺身 means sashimi`, `owner: data
    /// team`). Tags never become paths (they are values in rows and URLs, always
    /// escaped), so only what corrupts text or fools a reader is refused: control
    /// characters, bidirectional overrides and isolates (which make a tag display as
    /// something else), line and paragraph separators, and whitespace at either end.
    Text,
}

impl Rule {
    const fn describe(self) -> &'static str {
        match self {
            Rule::Identifier => {
                "names must be 1-64 ASCII characters: a letter or `_` first, then letters, digits or `_`"
            }
            Rule::Word => {
                "labels must be 1-64 ASCII characters: letters, digits, `_`, `-` or `.`, not starting with `.` or `-` and without `..`"
            }
            Rule::Text => {
                "tags must be 1-256 bytes of printable text in any language (spaces inside are fine), without control or bidirectional-override characters or whitespace at either end"
            }
        }
    }
}

/// Checks `input` against `rule`; the error quotes the input and states the rule.
pub(crate) fn validate(kind: &'static str, rule: Rule, input: &str) -> Result<()> {
    let fail = |reason: String| Error::InvalidName { kind, input: input.to_owned(), reason, rule: rule.describe() };
    if input.is_empty() {
        return Err(fail("it is empty".into()));
    }
    if rule == Rule::Text {
        return validate_text(input).map_err(fail);
    }
    if input.len() > MAX_NAME_LEN {
        return Err(fail(format!("it is {} bytes long, the limit is {MAX_NAME_LEN}", input.len())));
    }
    if let Some((pos, c)) = input.char_indices().find(|(_, c)| !c.is_ascii()) {
        return Err(fail(format!("non-ASCII character {c:?} at byte {pos}")));
    }
    let bytes = input.as_bytes();
    let allowed = |b: u8| match rule {
        Rule::Identifier => b.is_ascii_alphanumeric() || b == b'_',
        Rule::Word => b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'),
        // Checked by `validate_text` above.
        Rule::Text => true,
    };
    if let Some((pos, &b)) = bytes.iter().enumerate().find(|(_, b)| !allowed(**b)) {
        let shown = match b {
            0 => "NUL".to_owned(),
            b' ' => "space".to_owned(),
            b'/' | b'\\' => format!("path separator {:?}", b as char),
            _ if b.is_ascii_control() => format!("control character 0x{b:02x}"),
            _ => format!("{:?}", b as char),
        };
        return Err(fail(format!("{shown} at position {pos} is not allowed")));
    }
    let first = bytes[0];
    match rule {
        Rule::Identifier if first.is_ascii_digit() => {
            return Err(fail("it starts with a digit".into()));
        }
        Rule::Word if first == b'.' || first == b'-' => {
            return Err(fail(format!("it starts with {:?}", first as char)));
        }
        Rule::Word if input.contains("..") => {
            return Err(fail("it contains `..`".into()));
        }
        _ => {}
    }
    Ok(())
}

/// The [`Rule::Text`] checks past emptiness: why `input` is refused, if it is.
fn validate_text(input: &str) -> std::result::Result<(), String> {
    if input.len() > MAX_TAG_LEN {
        return Err(format!("it is {} bytes long, the limit is {MAX_TAG_LEN}", input.len()));
    }
    let refused = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
    };
    if let Some((pos, c)) = input.char_indices().find(|&(_, c)| refused(c)) {
        let what = if c == '\0' {
            "NUL".to_owned()
        } else if c.is_control() {
            format!("control character U+{:04X}", c as u32)
        } else {
            format!("invisible formatting character U+{:04X}", c as u32)
        };
        return Err(format!("{what} at byte {pos} is not allowed"));
    }
    if input.starts_with(char::is_whitespace) || input.ends_with(char::is_whitespace) {
        return Err("it starts or ends with whitespace; trim it".into());
    }
    Ok(())
}

macro_rules! define_name {
    ($(#[$meta:meta])* $ty:ident, $kind:literal, $rule:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(Arc<str>);

        impl $ty {
            /// What this name names, as used in error messages.
            pub const KIND: &'static str = $kind;

            /// Validates `input` and wraps it.
            pub fn new(input: impl AsRef<str>) -> Result<Self> {
                let input = input.as_ref();
                validate($kind, $rule, input)?;
                Ok(Self(Arc::from(input)))
            }

            /// The name as text, as validated.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = Error;
            fn try_from(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(&*s).map_err(serde::de::Error::custom)
            }
        }
    };
}

define_name!(
    /// The name of a flow, e.g. `fanout`.
    FlowName, "flow name", Rule::Identifier
);
define_name!(
    /// The name of a step within a flow, e.g. `start`.
    StepName, "step name", Rule::Identifier
);
define_name!(
    /// The name of an artifact a task sets, e.g. `total`.
    ArtifactName, "artifact name", Rule::Identifier
);
define_name!(
    /// The name of a flow parameter, e.g. `n`.
    ParamName, "parameter name", Rule::Identifier
);
define_name!(
    /// The name of a launch plan, e.g. `data_sync_hourly`.
    PlanName, "launch plan name", Rule::Identifier
);
define_name!(
    /// A tag on a run, e.g. `nightly`, `v1.2`, `owner: data team` or `刺身 means sashimi`:
    /// printable text in any language, at most [`MAX_TAG_LEN`] bytes.
    Tag, "tag", Rule::Text
);
define_name!(
    /// A label key or value on a launch plan, e.g. `team` or `sync`.
    LabelPart, "label", Rule::Word
);

impl StepName {
    /// The step every flow starts at.
    pub fn start() -> Self {
        Self(Arc::from("start"))
    }
    /// The step every flow ends at.
    pub fn end() -> Self {
        Self(Arc::from("end"))
    }
}

/// A `key=value` label on a launch plan.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Label {
    /// What the label says something about, e.g. `team`.
    pub key: LabelPart,
    /// What it says, e.g. `sync`.
    pub value: LabelPart,
}

impl FromStr for Label {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (k, v) = s.split_once('=').ok_or_else(|| Error::InvalidValue {
            what: "label",
            input: s.to_owned(),
            reason: "expected key=value, e.g. team=sync".into(),
        })?;
        Ok(Label { key: LabelPart::new(k)?, value: LabelPart::new(v)? })
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_identifiers() {
        for ok in ["start", "end", "_x", "a1", "Work_2", &"a".repeat(64)] {
            StepName::new(ok).unwrap();
        }
    }

    #[test]
    fn rejects_bad_names_quoting_input_and_rule() {
        let cases = [
            ("", "empty"),
            ("..", "'.'"),
            ("a/b", "path separator"),
            ("a\\b", "path separator"),
            ("a\0b", "NUL"),
            ("a b", "space"),
            ("é", "non-ASCII"),
            ("1abc", "digit"),
            ("a-b", "'-'"),
        ];
        for (input, reason) in cases {
            let err = FlowName::new(input).unwrap_err().to_string();
            assert!(err.contains(&format!("{input:?}")), "{err}");
            assert!(err.contains(reason), "{input:?}: {err}");
            assert!(err.contains("flow name"), "{err}");
            assert!(err.contains("a letter or `_` first"), "{err}");
        }
        let long = "a".repeat(65);
        let err = ArtifactName::new(&long).unwrap_err().to_string();
        assert!(err.contains("limit is 64"), "{err}");
    }

    #[test]
    fn words_allow_dots_and_dashes_but_not_traversal() {
        LabelPart::new("v1.2").unwrap();
        LabelPart::new("nightly-eu").unwrap();
        LabelPart::new("2026").unwrap();
        for bad in ["..", "a..b", ".hidden", "-x", "a/b", "a b", ""] {
            assert!(LabelPart::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tags_are_text_people_write_in_any_language() {
        for ok in [
            "nightly",
            "v1.2",
            "刺身 means sashimi",
            "owner: data team",
            "a/b",
            "..",
            "ünïcödé ✓",
            "x".repeat(256).as_str(),
        ] {
            assert_eq!(Tag::new(ok).unwrap().as_str(), ok);
        }
        let cases: &[(&str, &str)] = &[
            ("", "it is empty"),
            (&"é".repeat(129), "258 bytes long, the limit is 256"),
            ("a\nb", "control character U+000A at byte 1"),
            ("a\0b", "NUL at byte 1"),
            ("evil\u{202E}gpj.exe", "invisible formatting character U+202E at byte 4"),
            (" padded", "starts or ends with whitespace"),
            ("padded\t", "control character U+0009"),
        ];
        for (bad, reason) in cases {
            let e = Tag::new(bad).unwrap_err().to_string();
            assert!(e.contains(reason), "{bad:?}: {e}");
            assert!(e.contains("printable text in any language"), "{e}");
        }
    }

    #[test]
    fn serde_validates() {
        let n: StepName = serde_json::from_str("\"work\"").unwrap();
        assert_eq!(n, "work");
        let err = serde_json::from_str::<StepName>("\"../etc\"").unwrap_err();
        assert!(err.to_string().contains("step name"));
    }

    #[test]
    fn labels_parse() {
        let l: Label = "team=sync".parse().unwrap();
        assert_eq!(l.to_string(), "team=sync");
        assert!("team".parse::<Label>().is_err());
        assert!("team=a/b".parse::<Label>().is_err());
    }

    proptest! {
        #[test]
        fn valid_names_contain_no_path_syntax(s in "\\PC{0,80}") {
            if let Ok(n) = FlowName::new(&s) {
                prop_assert!(!n.as_str().contains('/') && !n.as_str().contains('.') && !n.as_str().contains('\\'));
                prop_assert!(n.as_str().len() <= MAX_NAME_LEN);
            }
            if let Ok(t) = Tag::new(&s) {
                prop_assert!(t.as_str().len() <= MAX_TAG_LEN);
                prop_assert!(!t.as_str().chars().any(char::is_control));
            }
            if let Ok(l) = LabelPart::new(&s) {
                prop_assert!(!l.as_str().contains("..") && !l.as_str().contains('/'));
            }
        }

        #[test]
        fn identifiers_round_trip(s in "[A-Za-z_][A-Za-z0-9_]{0,63}") {
            let n = ParamName::new(&s).unwrap();
            prop_assert_eq!(n.to_string(), s);
        }
    }
}
