//! Parameter values given to a flow, checked against its declarations in one place: a
//! run's `--param`s, typed values and `BRAID_PARAM_<NAME>` variables, and a manual
//! launch's `--param` overrides of a launch plan. Each problem is kept with where the
//! value was given, and every problem is reported at once.

use std::collections::BTreeMap;

use braid_dag::{ParamCheck, ParamErrors, ParamProblem, ParamSpec};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::executor::RunOptions;
use crate::flow::Flow;

/// Values given for a flow's parameters, as they are checked: the values that fit, where
/// each parameter was first given, and every problem so far.
pub(crate) struct GivenParams<'a> {
    check: ParamCheck<'a>,
    /// The values that fit, by parameter name.
    pub(crate) values: BTreeMap<String, Value>,
    /// Where each parameter was given first (`--param n=5`), to name both places of a
    /// repeat and to leave it out of the missing ones.
    given: BTreeMap<String, String>,
    /// Each problem with where its value was given (empty for a missing parameter).
    pub(crate) problems: Vec<(String, ParamProblem)>,
}

impl<'a> GivenParams<'a> {
    /// Nothing given yet for the parameters `declared`.
    pub(crate) fn new(declared: &'a [ParamSpec]) -> Self {
        GivenParams {
            check: ParamCheck::new(declared),
            values: BTreeMap::new(),
            given: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    /// Command-line text `--param NAME=TEXT`: parsed by the parameter's type. A declared
    /// parameter given a second time is a problem naming the first place (an unknown
    /// name is reported as unknown each time). Returns the value when it fits.
    pub(crate) fn text(&mut self, name: &str, text: &str) -> Option<Value> {
        let at = format!("--param {name}={text}");
        let is_list = self.check.declared(name).is_ok_and(|p| p.list.is_some());
        if let Some(first) = self.given.get(name)
            && self.check.declared(name).is_ok()
        {
            // A list takes a repeated `--param` as more items.
            if is_list && let Some(Value::Array(have)) = self.values.get(name).cloned() {
                return match self.check.parse(name, text) {
                    Ok(Value::Array(more)) => {
                        let all = Value::Array(have.into_iter().chain(more).collect());
                        self.values.insert(name.to_owned(), all.clone());
                        Some(all)
                    }
                    Ok(_) => None,
                    Err(p) => {
                        self.problems.push((at, p));
                        None
                    }
                };
            }
            if !is_list {
                let problem = ParamProblem::Twice { param: name.to_owned(), first: first.clone() };
                self.problems.push((at, problem));
                return None;
            }
        }
        let parsed = self.check.parse(name, text);
        self.given.entry(name.to_owned()).or_insert_with(|| at.clone());
        match parsed {
            Ok(v) => {
                self.values.insert(name.to_owned(), v.clone());
                Some(v)
            }
            Err(p) => {
                self.problems.push((at, p));
                None
            }
        }
    }

    /// A typed value (from a launch plan); a value given as text before stays.
    pub(crate) fn value(&mut self, name: &str, value: &Value) {
        let at = format!("value {name}={value}");
        match self.check.check(name, value) {
            Ok(_) => {
                self.values.entry(name.to_owned()).or_insert_with(|| value.clone());
            }
            Err(p) => self.problems.push((at.clone(), p)),
        }
        self.given.entry(name.to_owned()).or_insert(at);
    }

    /// Text from the environment variable `var` for parameter `name`.
    fn env(&mut self, name: &str, var: &str, text: &str) {
        match self.check.parse(name, text) {
            Ok(v) => {
                self.values.insert(name.to_owned(), v);
            }
            Err(p) => self.problems.push((format!("environment variable {var}"), p)),
        }
        self.given.entry(name.to_owned()).or_insert_with(|| format!("environment variable {var}"));
    }

    /// Whether a value (fitting or not) was given for `name`.
    fn is_given(&self, name: &str) -> bool {
        self.given.contains_key(name)
    }

    /// Adds a problem for each required parameter that was not given and for which
    /// `covered` is false.
    fn missing(&mut self, covered: impl Fn(&ParamSpec) -> bool) {
        let given = &self.given;
        let missing = self.check.missing(|p| given.contains_key(p.name.as_str()) || covered(p));
        self.problems.extend(missing.into_iter().map(|p| (String::new(), p)));
    }

    /// Takes the problems found so far, each with where its value was given.
    pub(crate) fn take_problems(&mut self) -> Vec<(String, ParamProblem)> {
        std::mem::take(&mut self.problems)
    }
}

/// Resolves a run's parameter values: command-line text, then typed values, then
/// `BRAID_PARAM_<NAME>`, then the computed or declared default. Every unknown,
/// ill-typed, repeated and missing parameter is reported at once, each with where it
/// was given ([`Error::Params`]); `problems` the caller found already (e.g. `--param`
/// text that is not `NAME=VALUE`) are listed first.
pub fn resolve_params_with(
    flow: &Flow,
    opts: &RunOptions,
    problems: Vec<(String, ParamProblem)>,
) -> Result<BTreeMap<String, Value>> {
    let declared = &flow.graph.spec().params;
    let mut params = GivenParams::new(declared);
    params.problems = problems;
    for (name, text) in &opts.params {
        params.text(name, text);
    }
    for (name, v) in &opts.param_values {
        params.value(name, v);
    }
    if opts.env_params {
        for spec in declared {
            if params.is_given(spec.name.as_str()) {
                continue;
            }
            let var = format!("BRAID_PARAM_{}", spec.name.as_str().to_uppercase());
            let text = match &opts.env_vars {
                Some(vars) => vars.get(&var).cloned(),
                None => std::env::var(&var).ok(),
            };
            if let Some(text) = text {
                params.env(spec.name.as_str(), &var, &text);
            }
        }
    }
    params.missing(|p| flow.computed.contains_key(&p.name));
    if !params.problems.is_empty() {
        return Err(Error::Params(ParamErrors { flow: flow.name().to_string(), problems: params.problems }));
    }
    let mut out = params.values;
    for spec in declared {
        let name = spec.name.as_str();
        if params.given.contains_key(name) {
            continue;
        }
        // Computed only for a run that starts: computing may cost, or count.
        if let Some(f) = flow.computed.get(&spec.name) {
            out.insert(name.to_owned(), f());
        } else if let Some(d) = &spec.default {
            out.insert(name.to_owned(), d.clone());
        } else if spec.optional {
            // Left out: `null`, which a step reads as `None`.
            out.insert(name.to_owned(), Value::Null);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_core::ParamName;
    use braid_dag::ParamType;
    use serde_json::json;

    fn declared() -> Vec<ParamSpec> {
        let spec = |name: &str, ty, default| ParamSpec { default, ..ParamSpec::new(ParamName::new(name).unwrap(), ty) };
        vec![spec("n", ParamType::UInt, Some(json!(5))), spec("label", ParamType::String, None)]
    }

    #[test]
    fn a_declared_parameter_given_twice_names_the_first_place_and_an_unknown_one_stays_unknown() {
        let d = declared();
        let mut given = GivenParams::new(&d);
        assert_eq!(given.text("n", "1"), Some(json!(1)));
        assert_eq!(given.text("n", "2"), None);
        assert_eq!(given.text("nn", "1"), None);
        assert_eq!(given.text("nn", "1"), None);
        let problems = given.take_problems();
        let at: Vec<&str> = problems.iter().map(|(at, _)| at.as_str()).collect();
        assert_eq!(at, ["--param n=2", "--param nn=1", "--param nn=1"]);
        assert_eq!(problems[0].1.to_string(), "parameter `n` is given twice (first as --param n=1); keep one");
        assert!(problems[1..].iter().all(|(_, p)| matches!(p, ParamProblem::Unknown { .. })));
        assert_eq!(given.values.get("n"), Some(&json!(1)), "the first value stands");
    }

    #[test]
    fn text_wins_over_a_typed_value_and_an_ill_typed_value_is_not_also_missing() {
        let d = declared();
        let mut given = GivenParams::new(&d);
        given.text("n", "3");
        given.value("n", &json!(4));
        given.value("label", &json!(7));
        given.missing(|_| false);
        assert_eq!(given.values.get("n"), Some(&json!(3)));
        let problems = given.take_problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "value label=7");
        assert!(matches!(problems[0].1, ParamProblem::WrongType { .. }));
    }
}
