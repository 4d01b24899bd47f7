//! Pathspecs name a flow, run, step or task: `flow[/run[/step[/task]]]`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::id::{RunId, TaskId};
use crate::name::{FlowName, StepName};

/// The run part of a pathspec: an id, or `latest` (the newest run of the flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunRef {
    /// `latest`: the newest run of the flow, resolved when the pathspec is used.
    Latest,
    /// One run, by id.
    Id(RunId),
}

impl fmt::Display for RunRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunRef::Latest => f.write_str("latest"),
            RunRef::Id(id) => fmt::Display::fmt(id, f),
        }
    }
}

impl FromStr for RunRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "latest" { Ok(RunRef::Latest) } else { RunId::parse(s).map(RunRef::Id) }
    }
}

/// A parsed pathspec. The parts are filled left to right: a step needs a run, a task
/// needs a step.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pathspec {
    /// The flow; always present.
    pub flow: FlowName,
    /// The run, if the pathspec goes that deep.
    pub run: Option<RunRef>,
    /// The step; only with a run.
    pub step: Option<StepName>,
    /// The task; only with a step.
    pub task: Option<TaskId>,
}

impl Pathspec {
    /// The pathspec of a whole flow: `flow`.
    pub fn flow(flow: FlowName) -> Self {
        Pathspec { flow, run: None, step: None, task: None }
    }

    /// The pathspec of one task: `flow/run/step/task`.
    pub fn task(flow: FlowName, run: RunId, step: StepName, task: TaskId) -> Self {
        Pathspec { flow, run: Some(RunRef::Id(run)), step: Some(step), task: Some(task) }
    }

    /// How deep the pathspec goes.
    pub fn depth(&self) -> PathspecDepth {
        match (&self.run, &self.step, &self.task) {
            (None, _, _) => PathspecDepth::Flow,
            (Some(_), None, _) => PathspecDepth::Run,
            (Some(_), Some(_), None) => PathspecDepth::Step,
            (Some(_), Some(_), Some(_)) => PathspecDepth::Task,
        }
    }

    /// Reads `flow[/run[/step[/task]]]` (a trailing `/` is allowed, the run may be
    /// `latest`). `InvalidPathspec` names the part that is wrong and why.
    pub fn parse(input: &str) -> Result<Self> {
        let fail =
            |part: &'static str, reason: String| Error::InvalidPathspec { input: input.to_owned(), part, reason };
        let trimmed = input.strip_suffix('/').unwrap_or(input);
        let parts: Vec<&str> = trimmed.split('/').collect();
        if parts.len() > 4 {
            return Err(fail("the whole", format!("has {} parts, at most 4", parts.len())));
        }
        let flow = FlowName::new(parts[0]).map_err(|e| fail("flow part", format!("is not valid: {e}")))?;
        let run = parts
            .get(1)
            .map(|s| s.parse::<RunRef>().map_err(|e| fail("run part", format!("is not valid: {e}"))))
            .transpose()?;
        let step = parts
            .get(2)
            .map(|s| StepName::new(s).map_err(|e| fail("step part", format!("is not valid: {e}"))))
            .transpose()?;
        let task = parts
            .get(3)
            .map(|s| TaskId::parse(s).map_err(|e| fail("task part", format!("is not valid: {e}"))))
            .transpose()?;
        Ok(Pathspec { flow, run, step, task })
    }
}

/// How many parts a pathspec has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathspecDepth {
    /// `flow`.
    Flow,
    /// `flow/run`.
    Run,
    /// `flow/run/step`.
    Step,
    /// `flow/run/step/task`.
    Task,
}

impl fmt::Display for Pathspec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.flow)?;
        if let Some(run) = &self.run {
            write!(f, "/{run}")?;
            if let Some(step) = &self.step {
                write!(f, "/{step}")?;
                if let Some(task) = &self.task {
                    write!(f, "/{task}")?;
                }
            }
        }
        Ok(())
    }
}

impl FromStr for Pathspec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl Serialize for Pathspec {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Pathspec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_depth() {
        let id = RunId::generate();
        assert_eq!(Pathspec::parse("fanout").unwrap().depth(), PathspecDepth::Flow);
        let p = Pathspec::parse("fanout/latest").unwrap();
        assert_eq!(p.run, Some(RunRef::Latest));
        assert_eq!(p.depth(), PathspecDepth::Run);
        let p = Pathspec::parse(&format!("fanout/{id}/work")).unwrap();
        assert_eq!(p.run, Some(RunRef::Id(id)));
        assert_eq!(p.depth(), PathspecDepth::Step);
        let p = Pathspec::parse(&format!("fanout/{id}/work/12")).unwrap();
        assert_eq!(p.task, Some(TaskId(12)));
        assert_eq!(p.to_string(), format!("fanout/{id}/work/12"));
        assert_eq!(Pathspec::parse("fanout/latest/").unwrap().to_string(), "fanout/latest");
    }

    #[test]
    fn errors_name_the_wrong_part() {
        for (input, part) in [
            ("", "flow part"),
            ("../x", "flow part"),
            ("fanout/notarun", "run part"),
            ("fanout/latest/../x", "step part"),
            ("fanout/latest/work/x", "task part"),
            ("fanout/latest/work/1/2", "the whole"),
            ("fanout//work", "run part"),
        ] {
            let e = Pathspec::parse(input).unwrap_err().to_string();
            assert!(e.contains(part), "{input:?}: {e}");
            assert!(e.contains(&format!("{input:?}")), "{e}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,100}") {
            let _ = Pathspec::parse(&s);
        }

        #[test]
        fn round_trips(flow in "[a-z_][a-z0-9_]{0,20}", step in "[a-z_][a-z0-9_]{0,20}", task in 0u64..u64::MAX) {
            let spec = format!("{flow}/latest/{step}/{task}");
            prop_assert_eq!(Pathspec::parse(&spec).unwrap().to_string(), spec);
        }
    }
}
