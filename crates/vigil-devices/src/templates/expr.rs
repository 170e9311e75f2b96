//! The two expression languages of the connector's templates: JSONPath (Newtonsoft.Json
//! dialect, evaluated with `serde_json_path` after rewriting to RFC 9535) and JMESPath (the
//! `jmespath` crate, with the connector's extra functions).

use jmespath::functions::{ArgumentType, CustomFunction, Signature};
use jmespath::{Context, ErrorReason, JmespathError, Rcvar, Runtime, Variable};
use serde_json::Value;
use serde_json_path::JsonPath;
use std::fmt;
use std::sync::LazyLock;

/// An expression language of the connector's templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Language {
    JsonPath,
    JmesPath,
}

impl Language {
    /// Parses the template spelling (`JsonPath`, `JmesPath`; any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "jsonpath" => Some(Self::JsonPath),
            "jmespath" => Some(Self::JmesPath),
            _ => None,
        }
    }
}

/// A compiled expression.
#[derive(Clone)]
pub(crate) enum Expr {
    JsonPath {
        source: String,
        path: JsonPath,
        /// Newtonsoft's `$..[?(...)]` also tests the root itself; RFC 9535 does not. Such
        /// paths are evaluated on `[root]` so the root becomes a child.
        include_root: bool,
    },
    JmesPath {
        source: String,
        expr: jmespath::Expression<'static>,
    },
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::JsonPath { source, .. } => write!(f, "JsonPath({source:?})"),
            Self::JmesPath { source, .. } => write!(f, "JmesPath({source:?})"),
        }
    }
}

impl Expr {
    pub(crate) fn compile(source: &str, language: Language) -> Result<Self, String> {
        match language {
            Language::JsonPath => {
                let rewritten = newtonsoft_to_rfc9535(source.trim());
                let path = JsonPath::parse(&rewritten).map_err(|e| {
                    if rewritten == source.trim() {
                        format!("invalid JSONPath {source:?}: {e}")
                    } else {
                        format!("invalid JSONPath {source:?} (read as {rewritten:?}): {e}")
                    }
                })?;
                Ok(Self::JsonPath {
                    source: source.to_owned(),
                    path,
                    include_root: rewritten.starts_with("$..[?"),
                })
            }
            Language::JmesPath => {
                let expr = RUNTIME
                    .compile(source)
                    .map_err(|e| format!("invalid JMESPath {source:?}: {e}"))?;
                Ok(Self::JmesPath {
                    source: source.to_owned(),
                    expr,
                })
            }
        }
    }

    pub(crate) fn source(&self) -> &str {
        match self {
            Self::JsonPath { source, .. } | Self::JmesPath { source, .. } => source,
        }
    }

    /// Every token the expression selects (the connector's `SelectTokens`): JSONPath nodes
    /// in order; a JMESPath array's elements, or its single non-null result.
    pub(crate) fn select_all(&self, data: &Value) -> Result<Vec<Value>, String> {
        match self {
            Self::JsonPath {
                path, include_root, ..
            } => {
                if *include_root {
                    let wrapped = Value::Array(vec![data.clone()]);
                    Ok(path.query(&wrapped).all().into_iter().cloned().collect())
                } else {
                    Ok(path.query(data).all().into_iter().cloned().collect())
                }
            }
            Self::JmesPath { .. } => match self.jmes(data)? {
                Value::Null => Ok(Vec::new()),
                Value::Array(items) => Ok(items),
                other => Ok(vec![other]),
            },
        }
    }

    /// The one token the expression selects (the connector's `SelectToken`): `None` when it
    /// selects nothing (or JSON null), an error when a JSONPath selects more than one.
    pub(crate) fn select_one(&self, data: &Value) -> Result<Option<Value>, String> {
        match self {
            Self::JsonPath { source, path, .. } => {
                let nodes = path.query(data).all();
                match nodes.as_slice() {
                    [] => Ok(None),
                    [one] => Ok(Some((*one).clone()).filter(|v| !v.is_null())),
                    many => Err(format!(
                        "expression {source:?} selects {} values where one is expected",
                        many.len()
                    )),
                }
            }
            Self::JmesPath { .. } => Ok(Some(self.jmes(data)?).filter(|v| !v.is_null())),
        }
    }

    fn jmes(&self, data: &Value) -> Result<Value, String> {
        let Self::JmesPath { source, expr } = self else {
            return Err("not a JMESPath expression".to_owned());
        };
        let result = expr
            .search(data)
            .map_err(|e| format!("expression {source:?} failed: {e}"))?;
        serde_json::to_value(&*result).map_err(|e| format!("expression {source:?}: {e}"))
    }
}

/// Rewrites the Newtonsoft.Json JSONPath dialect the connector's templates are written in to
/// RFC 9535: `@name` becomes `@.name` and dotted names that RFC 9535 shorthand does not allow
/// (`$.SystemProperties.iothub-enqueuedtime`) become bracketed names. String literals are
/// left alone.
pub(crate) fn newtonsoft_to_rfc9535(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len() + 8);
    let mut i = 0;
    let mut quote: Option<char> = None;
    while let Some(&c) = chars.get(i) {
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' {
                if let Some(&n) = chars.get(i + 1) {
                    out.push(n);
                    i += 1;
                }
            } else if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                out.push(c);
                i += 1;
            }
            '.' | '@' => {
                let mut dots = "";
                if c == '@' {
                    out.push('@');
                    i += 1;
                    if !chars.get(i).is_some_and(|n| is_name_start(*n)) {
                        continue;
                    }
                    dots = ".";
                } else {
                    i += 1;
                    dots = if chars.get(i) == Some(&'.') {
                        i += 1;
                        ".."
                    } else {
                        dots
                    };
                    if dots.is_empty() {
                        dots = ".";
                    }
                }
                let start = i;
                while chars.get(i).is_some_and(|n| !is_name_end(*n)) {
                    i += 1;
                }
                let name: String = chars.get(start..i).unwrap_or_default().iter().collect();
                if name.is_empty() || name == "*" || is_shorthand(&name) {
                    out.push_str(dots);
                    out.push_str(&name);
                } else {
                    out.push_str(if dots == ".." { ".." } else { "" });
                    out.push_str("['");
                    for ch in name.chars() {
                        if ch == '\'' || ch == '\\' {
                            out.push('\\');
                        }
                        out.push(ch);
                    }
                    out.push_str("']");
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn is_name_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_name_end(c: char) -> bool {
    matches!(
        c,
        '.' | '[' | ']' | '(' | ')' | '=' | '!' | '<' | '>' | '&' | '|' | ',' | '\'' | '"' | '?'
    ) || c.is_whitespace()
}

fn is_shorthand(name: &str) -> bool {
    let mut it = name.chars();
    it.next().is_some_and(is_name_start)
        && it.all(|c| c.is_alphanumeric() || c == '_' || !c.is_ascii())
}

/// The JMESPath runtime: the standard functions plus the connector's `add`, `subtract`,
/// `multiply`, `divide`, `insertString`, `fromUnixTimestamp` and `fromUnixTimestampMs`.
static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    let mut rt = Runtime::new();
    rt.register_builtin_functions();
    let num2 = || Signature::new(vec![ArgumentType::Number, ArgumentType::Number], None);
    rt.register_function("add", Box::new(arith(num2(), |a, b| Some(a + b))));
    rt.register_function("subtract", Box::new(arith(num2(), |a, b| Some(a - b))));
    rt.register_function("multiply", Box::new(arith(num2(), |a, b| Some(a * b))));
    rt.register_function(
        "divide",
        Box::new(arith(num2(), |a, b| (b != 0.0).then(|| a / b))),
    );
    rt.register_function(
        "insertString",
        Box::new(CustomFunction::new(
            Signature::new(
                vec![
                    ArgumentType::String,
                    ArgumentType::String,
                    ArgumentType::Number,
                ],
                None,
            ),
            Box::new(|args: &[Rcvar], ctx: &mut Context<'_>| {
                let (Some(orig), Some(ins), Some(pos)) = (
                    args.first().and_then(|v| v.as_string()),
                    args.get(1).and_then(|v| v.as_string()),
                    args.get(2).and_then(|v| v.as_number()),
                ) else {
                    return Err(runtime_error(ctx, "insertString: bad arguments"));
                };
                let chars: Vec<char> = orig.chars().collect();
                if !(pos >= 0.0 && pos.fract() == 0.0 && pos <= chars.len() as f64) {
                    return Err(runtime_error(ctx, "insertString: position out of range"));
                }
                let at = pos as usize;
                let mut s: String = chars.get(..at).unwrap_or_default().iter().collect();
                s.push_str(ins);
                s.extend(chars.get(at..).unwrap_or_default());
                Ok(Rcvar::new(Variable::String(s)))
            }),
        )),
    );
    for (name, per_sec) in [("fromUnixTimestamp", 1000.0), ("fromUnixTimestampMs", 1.0)] {
        rt.register_function(
            name,
            Box::new(CustomFunction::new(
                Signature::new(vec![ArgumentType::Number], None),
                Box::new(move |args: &[Rcvar], ctx: &mut Context<'_>| {
                    let n = args.first().and_then(|v| v.as_number()).unwrap_or(f64::NAN);
                    let ms = n * per_sec;
                    // Years 1..9999, as .NET DateTime allows.
                    if !(ms.is_finite()
                        && (-62_135_596_800_000.0..253_402_300_800_000.0).contains(&ms))
                    {
                        return Err(runtime_error(ctx, "unix timestamp out of range"));
                    }
                    let t = vigil_model::Timestamp::from_millis(ms.round() as i64);
                    Ok(Rcvar::new(Variable::String(t.to_rfc3339())))
                }),
            )),
        );
    }
    rt
});

fn arith(sig: Signature, f: fn(f64, f64) -> Option<f64>) -> CustomFunction {
    CustomFunction::new(
        sig,
        Box::new(move |args: &[Rcvar], ctx: &mut Context<'_>| {
            let a = args.first().and_then(|v| v.as_number());
            let b = args.get(1).and_then(|v| v.as_number());
            let r = a
                .zip(b)
                .and_then(|(a, b)| f(a, b))
                .map(round15)
                .and_then(serde_json::Number::from_f64)
                .ok_or_else(|| runtime_error(ctx, "arithmetic on invalid numbers"))?;
            Ok(Rcvar::new(Variable::Number(r)))
        }),
    )
}

/// Rounds to 15 significant digits, so `78 * 0.0254` reads `1.9812` rather than
/// `1.9811999999999999` (binary floating-point noise is not measurement precision).
fn round15(x: f64) -> f64 {
    format!("{x:.14e}").parse().unwrap_or(x)
}

fn runtime_error(ctx: &Context<'_>, msg: &str) -> JmespathError {
    JmespathError::from_ctx(ctx, ErrorReason::Parse(msg.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jmes(src: &str, data: serde_json::Value) -> Result<Option<Value>, String> {
        Expr::compile(src, Language::JmesPath)?.select_one(&data)
    }

    #[test]
    fn the_connectors_jmespath_functions_work() {
        let d = serde_json::json!({ "a": 6, "b": 4, "s": "0930", "t": 1_600_000_000 });
        assert_eq!(
            jmes("add(a, b)", d.clone()),
            Ok(Some(serde_json::json!(10.0)))
        );
        assert_eq!(
            jmes("subtract(a, b)", d.clone()),
            Ok(Some(serde_json::json!(2.0)))
        );
        assert_eq!(
            jmes("divide(a, b)", d.clone()),
            Ok(Some(serde_json::json!(1.5)))
        );
        assert!(jmes("divide(a, `0`)", d.clone()).is_err());
        assert_eq!(
            jmes("insertString(s, ':', `2`)", d.clone()),
            Ok(Some(serde_json::json!("09:30")))
        );
        assert!(jmes("insertString(s, ':', `9`)", d.clone()).is_err());
        assert_eq!(
            jmes("fromUnixTimestamp(t)", d.clone()),
            Ok(Some(serde_json::json!("2020-09-13T12:26:40Z")))
        );
        assert_eq!(
            jmes("fromUnixTimestampMs(`1600000000250`)", d.clone()),
            Ok(Some(serde_json::json!("2020-09-13T12:26:40.250Z")))
        );
        assert!(jmes("fromUnixTimestamp(`1e300`)", d).is_err());
    }

    #[test]
    fn a_jsonpath_that_selects_several_values_for_one_is_an_error() {
        let e = Expr::compile("$.a[*]", Language::JsonPath).expect("compiles");
        let r = e.select_one(&serde_json::json!({ "a": [1, 2] }));
        assert_eq!(
            r,
            Err("expression \"$.a[*]\" selects 2 values where one is expected".to_owned())
        );
    }

    #[test]
    fn newtonsoft_paths_are_rewritten() {
        assert_eq!(
            newtonsoft_to_rfc9535("$..[?(@systolic && @diastolic)]"),
            "$..[?(@.systolic && @.diastolic)]"
        );
        assert_eq!(
            newtonsoft_to_rfc9535("$.SystemProperties.iothub-enqueuedtime"),
            "$.SystemProperties['iothub-enqueuedtime']"
        );
        assert_eq!(
            newtonsoft_to_rfc9535("$..[?(@unit == 'in.ches')]"),
            "$..[?(@.unit == 'in.ches')]"
        );
        assert_eq!(newtonsoft_to_rfc9535("$..x-y"), "$..['x-y']");
        assert_eq!(newtonsoft_to_rfc9535("$.a[0].b"), "$.a[0].b");
    }
}
