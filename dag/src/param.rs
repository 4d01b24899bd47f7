//! Flow parameters: their types, how CLI text becomes a typed JSON value, and how
//! defaults and launch-plan inputs are type-checked.

use std::fmt;

use braid_core::ParamName;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The type of a flow parameter. Values travel as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// Any text, taken verbatim.
    String,
    /// A signed 64-bit integer.
    Int,
    /// An unsigned 64-bit integer.
    #[serde(rename = "uint")]
    UInt,
    /// A finite 64-bit float; integers are accepted.
    Float,
    /// `true` or `false`.
    Bool,
    /// Any JSON value.
    Json,
}

impl ParamType {
    /// What values of this type look like, for error messages.
    pub fn expected(self) -> &'static str {
        match self {
            ParamType::String => "a string",
            ParamType::Int => "an integer (i64)",
            ParamType::UInt => "an unsigned integer (u64)",
            ParamType::Float => "a finite number (f64)",
            ParamType::Bool => "a boolean (true or false)",
            ParamType::Json => "a JSON value",
        }
    }

    /// Parses command-line text such as `1000`, `true`, `3.5` or `{"a": 1}` into a JSON
    /// value of this type (surrounding whitespace is ignored except for strings); the
    /// error is the detail (empty, or starting with a space, e.g. ` (out of range)`).
    fn parse_text(&self, text: &str) -> Result<Value, String> {
        let t = text.trim();
        let int_detail = |e: std::num::ParseIntError| match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => " (out of range)".to_owned(),
            _ if t.starts_with('-') && *self == ParamType::UInt => " (must not be negative)".to_owned(),
            _ => String::new(),
        };
        match self {
            ParamType::String => Ok(Value::String(text.to_owned())),
            ParamType::Int => t.parse::<i64>().map(Value::from).map_err(int_detail),
            ParamType::UInt => t.parse::<u64>().map(Value::from).map_err(int_detail),
            ParamType::Float => {
                let f: f64 = t.parse().map_err(|_| String::new())?;
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| " (infinity and NaN are not allowed)".to_owned())
            }
            ParamType::Bool => match t.to_ascii_lowercase().as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(String::new()),
            },
            ParamType::Json => serde_json::from_str(text).map_err(|e| format!(" ({e})")),
        }
    }

    pub(crate) fn accepts(self, value: &Value) -> bool {
        match self {
            ParamType::String => value.is_string(),
            ParamType::Int => value.is_i64(),
            ParamType::UInt => value.is_u64(),
            ParamType::Float => value.is_number(),
            ParamType::Bool => value.is_boolean(),
            ParamType::Json => true,
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::UInt => "uint",
            ParamType::Float => "float",
            ParamType::Bool => "bool",
            ParamType::Json => "json",
        })
    }
}

/// Shortens a quoted input for an error message.
pub(crate) fn shorten(s: String) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}… ({} bytes)", &s[..cut], s.len()),
        None => s,
    }
}

/// A validated flow parameter, as stored in a [`FlowSpec`](crate::FlowSpec).
/// The parameter is required when it has no default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    /// The parameter's name, unique in the flow.
    pub name: ParamName,
    /// The type its values must have.
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// `Some(Value::Null)` is a real `null` default (for `json` parameters).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub default: Option<Value>,
    /// What the parameter is for, for people (`--help`, the UI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// May be left out with no default: its value is then `null` (`Option<T>` in a step).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// A list of values of `ty`, and the separator that splits one `--param` text into
    /// items (`,` unless the flow says otherwise; empty: no splitting). A repeated
    /// `--param NAME=...` adds its items to the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl ParamSpec {
    /// A parameter without a default that is not optional must be given at launch.
    pub fn is_required(&self) -> bool {
        self.default.is_none() && !self.optional
    }

    /// A parameter of type `ty`, required, single-valued, without help.
    pub fn new(name: ParamName, ty: ParamType) -> Self {
        ParamSpec { name, ty, default: None, help: None, optional: false, list: None }
    }

    /// Whether `value` fits: of the type (every item of it, for a list), or `null` for
    /// an optional parameter.
    pub fn accepts(&self, value: &Value) -> bool {
        shape_accepts(self.ty, self.optional, self.list.is_some(), value)
    }

    /// What values look like, for messages: `a string`, `a list of items, each an
    /// integer (i64)`, `a string, or null (it is optional)`.
    pub fn expected(&self) -> String {
        shape_expected(self.ty, self.optional, self.list.is_some())
    }

    /// The type as people read it: `string`, `list of uint (separated by ",")`,
    /// `string, optional`.
    pub fn type_text(&self) -> String {
        let base = match self.list.as_deref() {
            Some("") => format!("list of {}", self.ty),
            Some(sep) => format!("list of {} (separated by {sep:?})", self.ty),
            None => self.ty.to_string(),
        };
        if self.optional { format!("{base}, optional") } else { base }
    }

    /// Parses command-line text: by the type, or, for a list, split on the separator
    /// (each item trimmed; empty text is an empty list) and each item parsed.
    fn parse_text(&self, text: &str) -> Result<Value, String> {
        let Some(sep) = &self.list else { return self.ty.parse_text(text) };
        if text.trim().is_empty() {
            return Ok(Value::Array(Vec::new()));
        }
        let items: Vec<&str> = if sep.is_empty() { vec![text] } else { text.split(sep.as_str()).collect() };
        let n = items.len();
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let item = if self.ty == ParamType::String { item.trim() } else { item };
                self.ty.parse_text(item).map_err(|detail| {
                    format!(" (item {} of {n}, {item:?}, is not {}{detail})", i + 1, self.ty.expected())
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
    }
}

/// Whether `value` fits a parameter of type `ty`, optional or not, a list or not.
pub(crate) fn shape_accepts(ty: ParamType, optional: bool, list: bool, value: &Value) -> bool {
    if value.is_null() && optional {
        return true;
    }
    match (list, value) {
        (true, Value::Array(items)) => items.iter().all(|v| ty.accepts(v)),
        (true, _) => false,
        (false, v) => ty.accepts(v),
    }
}

/// What values of such a parameter look like, for messages.
pub(crate) fn shape_expected(ty: ParamType, optional: bool, list: bool) -> String {
    let base = if list { format!("a list of items, each {}", ty.expected()) } else { ty.expected().to_owned() };
    if optional { format!("{base}, or null (it is optional)") } else { base }
}

/// A parameter declaration for [`FlowBuilder::param`](crate::FlowBuilder::param). Nothing
/// is checked here: the name, the default and its type are validated by `build()`, which
/// reports every problem at once.
///
/// ```
/// use braid_dag::{Param, ParamType};
/// let n = Param::new("n", ParamType::UInt).default(1000).help("how many items");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub(crate) name: String,
    pub(crate) ty: ParamType,
    /// `Err` holds why the default could not be serialized.
    pub(crate) default: Option<Result<Value, String>>,
    pub(crate) help: Option<String>,
    pub(crate) optional: bool,
    pub(crate) list: Option<String>,
}

impl Param {
    /// A required parameter `name` of type `ty`, without help text.
    pub fn new(name: &str, ty: ParamType) -> Self {
        Param { name: name.to_owned(), ty, default: None, help: None, optional: false, list: None }
    }

    /// Makes the parameter optional without a default: left out, its value is `null`,
    /// which a step reads as `None` (`ctx.param::<Option<String>>("since")`).
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Makes it a list of values of its type: `--param sites=a,b,c`, or repeated
    /// `--param sites=a --param sites=b`; a step reads a `Vec` (`ctx.param::<Vec<String>>`).
    pub fn list(self) -> Self {
        self.list_separated(",")
    }

    /// A list whose `--param` text is split on `separator` (empty: never split, so each
    /// `--param` is one item).
    pub fn list_separated(mut self, separator: &str) -> Self {
        self.list = Some(separator.to_owned());
        self
    }

    /// Sets the default value (which makes the parameter optional).
    pub fn default(mut self, value: impl Serialize) -> Self {
        self.default = Some(serde_json::to_value(value).map_err(|e| e.to_string()));
        self
    }

    /// Sets the help text shown with the parameter.
    pub fn help(mut self, text: &str) -> Self {
        self.help = Some(text.to_owned());
        self
    }
}

impl From<ParamSpec> for Param {
    fn from(p: ParamSpec) -> Self {
        Param {
            name: p.name.as_str().to_owned(),
            ty: p.ty,
            default: p.default.map(Ok),
            help: p.help,
            optional: p.optional,
            list: p.list,
        }
    }
}

/// What a JSON value is, for messages: `an integer`, `a string`, ...
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_u64() => "an integer",
        Value::Number(n) if n.is_i64() => "a negative integer",
        Value::Number(_) => "a number with a fraction",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table (object)",
    }
}

/// One problem with a value given for a flow's parameter. Where the value was given
/// (`--param n=x`, `fixed.region`, ...) is kept beside it, in [`ParamErrors`] or by the
/// caller. More checks may bring more variants, so a `match` outside this crate needs a
/// `_` arm.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ParamProblem {
    /// Command-line text that is not `NAME=VALUE`.
    NotNameValue {
        /// The text as given.
        text: String,
        /// A correct `NAME=VALUE` for this flow, for the message.
        example: String,
    },
    /// A name the flow does not declare.
    Unknown {
        /// The undeclared name.
        name: String,
        /// Every declared parameter with its type, for the message.
        declared: Vec<(ParamName, ParamType)>,
        /// The closest declared name, if one is close.
        suggestion: Option<String>,
    },
    /// Text that does not parse as the parameter's type.
    BadText {
        /// The parameter.
        param: ParamName,
        /// Its type.
        ty: ParamType,
        /// The text as given.
        text: String,
        /// Extra detail such as ` (out of range)`; empty or starting with a space.
        detail: String,
    },
    /// A JSON value (a plan input, a typed value) of another type than the parameter's.
    WrongType {
        /// The parameter.
        param: ParamName,
        /// Its type.
        ty: ParamType,
        /// What its values look like (the type, a list of it, or null when optional).
        expected: String,
        /// The value as JSON, shortened when long.
        value: String,
        /// What the value is instead, e.g. `a string`.
        kind: &'static str,
    },
    /// The same parameter given a second time; `first` is where it was given first.
    Twice {
        /// The parameter.
        param: String,
        /// Where it was given first, e.g. `--param n=3`.
        first: String,
    },
    /// A parameter without a default that nothing gave.
    Missing {
        /// The parameter.
        param: ParamName,
        /// Its type, for the message.
        ty: ParamType,
    },
}

impl fmt::Display for ParamProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamProblem::NotNameValue { text, example } => {
                write!(f, "{text:?} is not NAME=VALUE; write it like --param {example}")
            }
            ParamProblem::Unknown { name, declared, suggestion } => {
                write!(f, "the flow has no parameter `{name}`")?;
                if let Some(s) = suggestion {
                    write!(f, " (did you mean `{s}`?)")?;
                }
                if declared.is_empty() {
                    f.write_str("; it declares none")
                } else {
                    let list: Vec<String> = declared.iter().map(|(n, t)| format!("`{n}` ({t})")).collect();
                    write!(f, "; it has: {}", list.join(", "))
                }
            }
            ParamProblem::BadText { param, ty, text, detail } => {
                write!(f, "parameter `{param}` expects {}, got {}{detail}", ty.expected(), shorten(format!("{text:?}")))
            }
            ParamProblem::WrongType { param, expected, value, kind, .. } => {
                write!(f, "{value} is {kind}, the flow's parameter `{param}` is {expected}")
            }
            ParamProblem::Twice { param, first } => {
                write!(f, "parameter `{param}` is given twice (first as {first}); keep one")
            }
            ParamProblem::Missing { param, ty } => {
                write!(f, "the flow requires parameter `{param}` ({ty}, no default) and it is not given")
            }
        }
    }
}

/// Every problem with the parameter values given to a run of a flow, each with where
/// the value was given (`--param n=x`, `BRAID_PARAM_N`, ...; empty for a missing one).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ParamErrors {
    /// The flow whose parameters they are.
    pub flow: String,
    /// Each problem with where the value was given (empty for a missing one).
    pub problems: Vec<(String, ParamProblem)>,
}

impl fmt::Display for ParamErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |at: &str, p: &ParamProblem| {
            let hint = match p {
                ParamProblem::Missing { param, .. } => format!("; pass --param {param}=VALUE"),
                _ => String::new(),
            };
            if at.is_empty() { format!("{p}{hint}") } else { format!("{at}: {p}{hint}") }
        };
        match self.problems.as_slice() {
            [(at, p)] => write!(f, "flow `{}`: {}", self.flow, line(at, p)),
            all => {
                write!(f, "flow `{}`: {} problems with its parameters:", self.flow, all.len())?;
                for (at, p) in all {
                    write!(f, "\n  {}", line(at, p))?;
                }
                Ok(())
            }
        }
    }
}

/// Splits command-line text `NAME=VALUE` (the name trimmed, the value verbatim).
/// `example` is shown in the error, e.g. `n=1000`.
pub fn split_param_arg<'t>(text: &'t str, example: &str) -> Result<(&'t str, &'t str), ParamProblem> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim(), v)),
        _ => Err(ParamProblem::NotNameValue { text: text.to_owned(), example: example.to_owned() }),
    }
}

/// Checks values given for a flow's parameters against their declarations. Every place
/// that takes parameter values (a run's `--param`s and typed values, a launch plan's
/// inputs, a manual launch's overrides) checks them here, so a problem reads the same
/// wherever it is found.
#[derive(Debug, Clone, Copy)]
pub struct ParamCheck<'a> {
    declared: &'a [ParamSpec],
}

impl<'a> ParamCheck<'a> {
    /// A checker for a flow's declared parameters (e.g. [`crate::FlowGraph::params`]).
    pub fn new(declared: &'a [ParamSpec]) -> Self {
        ParamCheck { declared }
    }

    /// The declared parameter `name`, or [`ParamProblem::Unknown`] with the declared list
    /// and the closest name.
    pub fn declared(&self, name: &str) -> Result<&'a ParamSpec, ParamProblem> {
        self.declared.iter().find(|p| p.name.as_str() == name).ok_or_else(|| {
            let names: Vec<String> = self.declared.iter().map(|p| p.name.to_string()).collect();
            ParamProblem::Unknown {
                name: name.to_owned(),
                declared: self.declared.iter().map(|p| (p.name.clone(), p.ty)).collect(),
                suggestion: crate::validate::suggest(name, &names),
            }
        })
    }

    /// Parses command-line text for parameter `name`.
    pub fn parse(&self, name: &str, text: &str) -> Result<Value, ParamProblem> {
        let p = self.declared(name)?;
        p.parse_text(text).map_err(|detail| ParamProblem::BadText {
            param: p.name.clone(),
            ty: p.ty,
            text: text.to_owned(),
            detail,
        })
    }

    /// Type-checks a JSON value for parameter `name`.
    pub fn check(&self, name: &str, value: &Value) -> Result<&'a ParamSpec, ParamProblem> {
        let p = self.declared(name)?;
        if p.accepts(value) {
            Ok(p)
        } else {
            Err(ParamProblem::WrongType {
                param: p.name.clone(),
                ty: p.ty,
                expected: p.expected(),
                value: shorten(value.to_string()),
                kind: kind_of(value),
            })
        }
    }

    /// The required parameters (no default) for which `given` is false.
    pub fn missing(&self, given: impl Fn(&ParamSpec) -> bool) -> Vec<ParamProblem> {
        self.declared
            .iter()
            .filter(|p| p.is_required() && !given(p))
            .map(|p| ParamProblem::Missing { param: p.name.clone(), ty: p.ty })
            .collect()
    }

    /// An example `NAME=VALUE` for messages: the first declared parameter.
    pub fn example(&self) -> String {
        match self.declared.first() {
            Some(p) => {
                let v = match p.ty {
                    ParamType::String => "text",
                    ParamType::Int | ParamType::UInt => "10",
                    ParamType::Float => "0.5",
                    ParamType::Bool => "true",
                    ParamType::Json => "{}",
                };
                format!("{}={v}", p.name)
            }
            None => "name=value".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn n() -> ParamName {
        ParamName::new("n").unwrap()
    }

    /// Parses `text` for a flow declaring one parameter `n` of type `ty`.
    fn parse(ty: ParamType, text: &str) -> Result<Value, String> {
        let declared = [ParamSpec::new(n(), ty)];
        ParamCheck::new(&declared).parse("n", text).map_err(|e| e.to_string())
    }

    /// Type-checks `value` for a flow declaring one parameter `n` of type `ty`.
    fn check(ty: ParamType, value: Value) -> Result<(), String> {
        let declared = [ParamSpec::new(n(), ty)];
        ParamCheck::new(&declared).check("n", &value).map(|_| ()).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_cli_text() {
        assert_eq!(parse(ParamType::UInt, "1000").unwrap(), json!(1000));
        assert_eq!(parse(ParamType::Int, " -5 ").unwrap(), json!(-5));
        assert_eq!(parse(ParamType::Float, "3.5").unwrap(), json!(3.5));
        assert_eq!(parse(ParamType::Bool, "TRUE").unwrap(), json!(true));
        assert_eq!(parse(ParamType::String, " x ").unwrap(), json!(" x "));
        assert_eq!(parse(ParamType::Json, r#"{"a":[1]}"#).unwrap(), json!({"a": [1]}));
    }

    #[test]
    fn parse_errors_name_param_type_and_text() {
        let e = parse(ParamType::UInt, "abc").unwrap_err();
        assert_eq!(e, r#"parameter `n` expects an unsigned integer (u64), got "abc""#);
        let e = parse(ParamType::UInt, "-1").unwrap_err();
        assert!(e.contains("must not be negative"), "{e}");
        let e = parse(ParamType::Int, "99999999999999999999").unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let e = parse(ParamType::Float, "inf").unwrap_err();
        assert!(e.contains("NaN"), "{e}");
        let e = parse(ParamType::Bool, "yes").unwrap_err();
        assert!(e.contains("true or false") && e.contains("\"yes\""), "{e}");
        let e = parse(ParamType::Json, "{").unwrap_err();
        assert!(e.contains("a JSON value") && e.contains("EOF"), "{e}");
        let long = "x".repeat(500);
        let e = parse(ParamType::Int, &long).unwrap_err();
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn checks_json_values() {
        check(ParamType::Float, json!(3)).unwrap();
        check(ParamType::Json, json!(null)).unwrap();
        let e = check(ParamType::UInt, json!(-1)).unwrap_err();
        assert_eq!(e, "-1 is a negative integer, the flow's parameter `n` is an unsigned integer (u64)");
        assert!(check(ParamType::Int, json!(1.5)).is_err());
        assert!(check(ParamType::String, json!(1)).is_err());
        assert!(check(ParamType::Bool, json!("true")).is_err());
    }

    #[test]
    fn serde_names_and_null_default() {
        assert_eq!(serde_json::to_string(&ParamType::UInt).unwrap(), "\"uint\"");
        let spec = ParamSpec { default: Some(Value::Null), ..ParamSpec::new(n(), ParamType::Json) };
        let text = serde_json::to_string(&spec).unwrap();
        let back: ParamSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec);
        assert!(!back.is_required());
        let required: ParamSpec = serde_json::from_str(r#"{"name":"n","type":"int"}"#).unwrap();
        assert!(required.is_required());
    }

    fn declared() -> Vec<ParamSpec> {
        vec![
            ParamSpec::new(ParamName::new("count").unwrap(), ParamType::UInt),
            ParamSpec {
                default: Some(json!("a")),
                ..ParamSpec::new(ParamName::new("site_id").unwrap(), ParamType::String)
            },
        ]
    }

    #[test]
    fn unknown_names_list_the_declared_ones_and_the_closest() {
        let d = declared();
        let check = ParamCheck::new(&d);
        let e = check.parse("cuont", "3").unwrap_err().to_string();
        assert_eq!(
            e,
            "the flow has no parameter `cuont` (did you mean `count`?); it has: `count` (uint), `site_id` (string)"
        );
        let e = check.check("region", &json!("eu")).unwrap_err().to_string();
        assert!(!e.contains("did you mean") && e.contains("`site_id` (string)"), "{e}");
        let e = ParamCheck::new(&[]).declared("x").unwrap_err().to_string();
        assert!(e.ends_with("it declares none"), "{e}");
    }

    #[test]
    fn ill_typed_text_and_values_name_the_type_and_what_was_given() {
        let d = declared();
        let check = ParamCheck::new(&d);
        assert_eq!(check.parse("count", "12").unwrap(), json!(12));
        let e = check.parse("count", "-3").unwrap_err().to_string();
        assert_eq!(e, r#"parameter `count` expects an unsigned integer (u64), got "-3" (must not be negative)"#);
        let e = check.check("site_id", &json!(1)).unwrap_err().to_string();
        assert_eq!(e, "1 is an integer, the flow's parameter `site_id` is a string");
        let e = check.check("count", &json!(-1)).unwrap_err().to_string();
        assert!(e.contains("-1 is a negative integer"), "{e}");
        assert!(check.check("count", &json!(7)).is_ok());
    }

    #[test]
    fn missing_lists_only_required_parameters_not_given() {
        let d = declared();
        let check = ParamCheck::new(&d);
        let m = check.missing(|_| false);
        assert_eq!(m.len(), 1, "site_id has a default");
        assert!(m[0].to_string().contains("`count` (uint, no default)"), "{}", m[0]);
        assert!(check.missing(|p| p.name.as_str() == "count").is_empty());
    }

    #[test]
    fn name_value_args_split_or_say_how_to_write_them() {
        assert_eq!(split_param_arg(" n =a=b", "n=1").unwrap(), ("n", "a=b"));
        let e = split_param_arg("n", "n=1").unwrap_err().to_string();
        assert_eq!(e, r#""n" is not NAME=VALUE; write it like --param n=1"#);
        assert!(split_param_arg("=3", "n=1").is_err());
        assert_eq!(ParamCheck::new(&declared()).example(), "count=10");
    }

    #[test]
    fn errors_list_every_problem_with_where_it_was_given() {
        let one = ParamErrors {
            flow: "f".into(),
            problems: vec![(
                "--param x=1".into(),
                ParamProblem::Twice { param: "x".into(), first: "--param x=0".into() },
            )],
        };
        assert_eq!(
            one.to_string(),
            "flow `f`: --param x=1: parameter `x` is given twice (first as --param x=0); keep one"
        );
        let missing = ParamProblem::Missing { param: ParamName::new("n").unwrap(), ty: ParamType::Int };
        let two = ParamErrors { flow: "f".into(), problems: vec![one.problems[0].clone(), (String::new(), missing)] };
        let text = two.to_string();
        assert!(text.starts_with("flow `f`: 2 problems with its parameters:\n  --param x=1: "), "{text}");
        assert!(
            text.ends_with(
                "\n  the flow requires parameter `n` (int, no default) and it is not given; pass --param n=VALUE"
            ),
            "{text}"
        );
    }
}
