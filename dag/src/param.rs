//! Flow parameters: their types, how CLI text becomes a typed JSON value, and how
//! defaults and launch-plan inputs are type-checked.

use std::fmt;

use braid_core::ParamName;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::Error;

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
    /// value of this type. Surrounding whitespace is ignored except for strings.
    pub fn parse_value(&self, param: &ParamName, text: &str) -> Result<Value, Error> {
        let fail = |detail: String| Error::ParamValue {
            param: param.clone(),
            expected: self.expected(),
            got: shorten(format!("{text:?}")),
            detail,
        };
        let t = text.trim();
        let int_detail = |e: std::num::ParseIntError| match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => " (out of range)".to_owned(),
            _ if t.starts_with('-') && *self == ParamType::UInt => " (must not be negative)".to_owned(),
            _ => String::new(),
        };
        match self {
            ParamType::String => Ok(Value::String(text.to_owned())),
            ParamType::Int => t.parse::<i64>().map(Value::from).map_err(|e| fail(int_detail(e))),
            ParamType::UInt => t.parse::<u64>().map(Value::from).map_err(|e| fail(int_detail(e))),
            ParamType::Float => {
                let f: f64 = t.parse().map_err(|_| fail(String::new()))?;
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| fail(" (infinity and NaN are not allowed)".to_owned()))
            }
            ParamType::Bool => match t.to_ascii_lowercase().as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(fail(String::new())),
            },
            ParamType::Json => serde_json::from_str(text).map_err(|e| fail(format!(" ({e})"))),
        }
    }

    /// Type-checks a JSON value (a default, a launch-plan input) against this type.
    pub fn check_value(&self, param: &ParamName, value: &Value) -> Result<(), Error> {
        if self.accepts(value) {
            Ok(())
        } else {
            Err(Error::ParamValue {
                param: param.clone(),
                expected: self.expected(),
                got: shorten(value.to_string()),
                detail: String::new(),
            })
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
    pub name: ParamName,
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// `Some(Value::Null)` is a real `null` default (for `json` parameters).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl ParamSpec {
    /// A parameter without a default must be given at launch.
    pub fn is_required(&self) -> bool {
        self.default.is_none()
    }
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
}

impl Param {
    pub fn new(name: &str, ty: ParamType) -> Self {
        Param { name: name.to_owned(), ty, default: None, help: None }
    }

    /// Sets the default value (which makes the parameter optional).
    pub fn default(mut self, value: impl Serialize) -> Self {
        self.default = Some(serde_json::to_value(value).map_err(|e| e.to_string()));
        self
    }

    pub fn help(mut self, text: &str) -> Self {
        self.help = Some(text.to_owned());
        self
    }
}

impl From<ParamSpec> for Param {
    fn from(p: ParamSpec) -> Self {
        Param { name: p.name.as_str().to_owned(), ty: p.ty, default: p.default.map(Ok), help: p.help }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn n() -> ParamName {
        ParamName::new("n").unwrap()
    }

    #[test]
    fn parses_cli_text() {
        let p = n();
        assert_eq!(ParamType::UInt.parse_value(&p, "1000").unwrap(), json!(1000));
        assert_eq!(ParamType::Int.parse_value(&p, " -5 ").unwrap(), json!(-5));
        assert_eq!(ParamType::Float.parse_value(&p, "3.5").unwrap(), json!(3.5));
        assert_eq!(ParamType::Bool.parse_value(&p, "TRUE").unwrap(), json!(true));
        assert_eq!(ParamType::String.parse_value(&p, " x ").unwrap(), json!(" x "));
        assert_eq!(ParamType::Json.parse_value(&p, r#"{"a":[1]}"#).unwrap(), json!({"a": [1]}));
    }

    #[test]
    fn parse_errors_name_param_type_and_text() {
        let p = n();
        let e = ParamType::UInt.parse_value(&p, "abc").unwrap_err().to_string();
        assert_eq!(e, r#"parameter `n` expects an unsigned integer (u64), got "abc""#);
        let e = ParamType::UInt.parse_value(&p, "-1").unwrap_err().to_string();
        assert!(e.contains("must not be negative"), "{e}");
        let e = ParamType::Int.parse_value(&p, "99999999999999999999").unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        let e = ParamType::Float.parse_value(&p, "inf").unwrap_err().to_string();
        assert!(e.contains("NaN"), "{e}");
        let e = ParamType::Bool.parse_value(&p, "yes").unwrap_err().to_string();
        assert!(e.contains("true or false") && e.contains("\"yes\""), "{e}");
        let e = ParamType::Json.parse_value(&p, "{").unwrap_err().to_string();
        assert!(e.contains("a JSON value") && e.contains("EOF"), "{e}");
        let long = "x".repeat(500);
        let e = ParamType::Int.parse_value(&p, &long).unwrap_err().to_string();
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn checks_json_values() {
        let p = n();
        ParamType::Float.check_value(&p, &json!(3)).unwrap();
        ParamType::Json.check_value(&p, &json!(null)).unwrap();
        let e = ParamType::UInt.check_value(&p, &json!(-1)).unwrap_err().to_string();
        assert_eq!(e, "parameter `n` expects an unsigned integer (u64), got -1");
        assert!(ParamType::Int.check_value(&p, &json!(1.5)).is_err());
        assert!(ParamType::String.check_value(&p, &json!(1)).is_err());
        assert!(ParamType::Bool.check_value(&p, &json!("true")).is_err());
    }

    #[test]
    fn serde_names_and_null_default() {
        assert_eq!(serde_json::to_string(&ParamType::UInt).unwrap(), "\"uint\"");
        let spec = ParamSpec { name: n(), ty: ParamType::Json, default: Some(Value::Null), help: None };
        let text = serde_json::to_string(&spec).unwrap();
        let back: ParamSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec);
        assert!(!back.is_required());
        let required: ParamSpec = serde_json::from_str(r#"{"name":"n","type":"int"}"#).unwrap();
        assert!(required.is_required());
    }
}
