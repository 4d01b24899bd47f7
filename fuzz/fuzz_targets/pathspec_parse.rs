//! Pathspecs and names typed on the command line or read from a store: `Pathspec`,
//! `RunRef`, `RunId`, `TaskId`, every name validator and `Label`. Properties: no panic;
//! whatever parses prints back to text that parses to the same value; a valid name is
//! safe as a path component; a valid tag is printable text.
#![no_main]

use std::fmt::{Debug, Display};
use std::str::FromStr;

use braid_core::{
    ArtifactName, FlowName, Label, LabelPart, MAX_NAME_LEN, MAX_TAG_LEN, ParamName, Pathspec, PathspecDepth, PlanName,
    RunId, RunRef, StepName, Tag, TaskId,
};
use libfuzzer_sys::fuzz_target;

/// `parse(display(x)) == x` whenever `s` parses to `x`; returns whether it parsed.
fn round_trip<T: FromStr + Display + PartialEq + Debug>(s: &str) -> Option<T>
where
    T::Err: Display,
{
    let v = s.parse::<T>().ok()?;
    let shown = v.to_string();
    match shown.parse::<T>() {
        Ok(back) => assert_eq!(back, v, "{s:?} -> {shown:?} parses to another value"),
        Err(e) => panic!("{s:?} parsed to {v:?}, shown as {shown:?}, which does not parse: {e}"),
    }
    Some(v)
}

/// A name that validates is the input itself and contains nothing a path could use.
fn check_name<T: AsRef<str> + Display>(s: &str, name: Option<T>) {
    let Some(n) = name else { return };
    let n = n.as_ref();
    assert_eq!(n, s);
    assert!(!n.is_empty() && n.len() <= MAX_NAME_LEN, "{s:?}");
    assert!(!n.contains(['/', '\\', '\0']) && !n.contains("..") && n != ".", "{s:?} is a valid name");
    assert!(n.is_ascii() && !n.chars().any(|c| c.is_ascii_control() || c == ' '), "{s:?}");
}

/// A tag that validates is the input itself: non-empty text of at most `MAX_TAG_LEN`
/// bytes, without control characters or whitespace at either end.
fn check_tag(s: &str, t: &str) {
    assert_eq!(t, s);
    assert!(!t.is_empty() && t.len() <= MAX_TAG_LEN, "{s:?}");
    assert!(!t.chars().any(char::is_control), "{s:?} has a control character");
    assert!(!t.starts_with(char::is_whitespace) && !t.ends_with(char::is_whitespace), "{s:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };

    if let Some(p) = round_trip::<Pathspec>(s) {
        assert_eq!(Pathspec::parse(s).ok().as_ref(), Some(&p));
        let parts = p.to_string().split('/').count();
        let depth = match parts {
            1 => PathspecDepth::Flow,
            2 => PathspecDepth::Run,
            3 => PathspecDepth::Step,
            _ => PathspecDepth::Task,
        };
        assert_eq!(p.depth(), depth, "{s:?}");
        let json = serde_json::to_string(&p).expect("a pathspec serializes");
        assert_eq!(serde_json::from_str::<Pathspec>(&json).expect("its JSON reads back"), p);
    } else {
        assert!(Pathspec::parse(s).is_err());
    }
    if let Some(RunRef::Id(id)) = round_trip::<RunRef>(s) {
        assert_eq!(id.to_string().len(), 26);
    }
    if let Some(id) = round_trip::<RunId>(s) {
        let json = serde_json::to_string(&id).expect("a run id serializes");
        assert_eq!(serde_json::from_str::<RunId>(&json).expect("its JSON reads back"), id);
    }
    let _ = round_trip::<TaskId>(s);

    let flow = round_trip::<FlowName>(s);
    let step = round_trip::<StepName>(s);
    let artifact = round_trip::<ArtifactName>(s);
    let param = round_trip::<ParamName>(s);
    let plan = round_trip::<PlanName>(s);
    // All identifiers follow one rule.
    let ok = flow.is_some();
    assert!([step.is_some(), artifact.is_some(), param.is_some(), plan.is_some()].iter().all(|&o| o == ok), "{s:?}");
    assert_eq!(FlowName::new(s).is_ok(), ok);
    check_name(s, flow);
    check_name(s, step);
    check_name(s, artifact);
    check_name(s, param);
    check_name(s, plan);

    let tag = round_trip::<Tag>(s);
    let part = round_trip::<LabelPart>(s);
    // Tags are free text (they never become paths); every label part is also a tag.
    if part.is_some() {
        assert!(tag.is_some(), "{s:?} is a label part but not a tag");
    }
    if let Some(t) = &tag {
        let json = serde_json::to_string(t).expect("a tag serializes");
        assert_eq!(&serde_json::from_str::<Tag>(&json).expect("its JSON reads back"), t);
        check_tag(s, t.as_str());
    }
    check_name(s, part);
    let _ = round_trip::<Label>(s);
});
