//! Converting JS arguments into core values, with `Invalid` errors that name the argument
//! or the dotted path inside an object (`spec.template.ports[1].port`).
//!
//! JS values become `serde_json::Value` under JSON rules with three differences, all to fail
//! loudly instead of silently changing what the caller meant: non-finite numbers, `BigInt`,
//! `Symbol`, functions, `Date`s, typed arrays and promises are `Invalid` (naming the path);
//! nesting deeper than [`MAX_DEPTH`] (which also catches cyclic objects) and values larger
//! than the store's object limit are `Invalid` before the walk gets far; and an exception
//! thrown by a getter or Proxy trap propagates to the caller unchanged. Like `JSON.stringify`,
//! object properties whose value is `undefined` are left out and array holes become `null`.
//!
//! The walk is recursive but bounded by [`MAX_DEPTH`], so no input can overflow the native
//! stack; a deeper value (10⁵ levels, or a cycle) stops at the bound.

use napi::ValueType;
use napi::bindgen_prelude::{Array, FromNapiValue, JsObjectValue, JsValue, Object, Unknown};
use serde_json::{Map, Number, Value};

use crate::errors::{R, invalid};

/// Deepest nesting a converted value may have. The core allows 64 levels below `spec` /
/// `status`; this bound sits well above that (so the core, not the binding, reports real
/// depth violations with its own field name) and well below any stack limit.
pub const MAX_DEPTH: usize = 128;

/// Bytes of JSON, roughly (each value is counted at no more than its shortest JSON form,
/// plus one byte per object key), a converted argument may amount to: twice the core's
/// default object limit, so the core's exact size check decides every close case and a
/// 100 MB object is refused after a few MB of walking.
pub const MAX_CONVERT_BYTES: usize =
    2 * floyd::store::validate::DEFAULT_MAX_OBJECT_BYTES + 64 * 1024;

/// The JS type name used in messages (`typeof`, with `null` and arrays told apart).
pub fn type_name(v: &Unknown<'_>) -> napi::Result<&'static str> {
    Ok(match v.get_type()? {
        ValueType::Undefined => "undefined",
        ValueType::Null => "null",
        ValueType::Boolean => "boolean",
        ValueType::Number => "number",
        ValueType::String => "string",
        ValueType::Symbol => "symbol",
        ValueType::Object if v.is_array()? => "array",
        ValueType::Object => "object",
        ValueType::Function => "function",
        ValueType::External => "external",
        ValueType::BigInt => "bigint",
        _ => "unknown",
    })
}

fn is_nullish(v: &Unknown<'_>) -> napi::Result<bool> {
    Ok(matches!(
        v.get_type()?,
        ValueType::Undefined | ValueType::Null
    ))
}

/// `Some(v)` unless the argument was left out or is `undefined` / `null`.
pub fn present<'a>(v: Option<Unknown<'a>>) -> napi::Result<Option<Unknown<'a>>> {
    match v {
        Some(v) if !is_nullish(&v)? => Ok(Some(v)),
        _ => Ok(None),
    }
}

/// A required string argument.
pub fn string(v: Option<Unknown<'_>>, field: &str) -> R<String> {
    match v {
        Some(v) if v.get_type()? == ValueType::String => Ok(String::from_unknown(v)?),
        Some(v) => Err(invalid(
            field,
            format!("must be a string, got {}", type_name(&v)?),
        )),
        None => Err(invalid(field, "is required (a string)")),
    }
}

/// An optional string argument (`undefined` / `null` = absent).
pub fn opt_string(v: Option<Unknown<'_>>, field: &str) -> R<Option<String>> {
    match present(v)? {
        Some(v) => string(Some(v), field).map(Some),
        None => Ok(None),
    }
}

/// A required number argument (any number, NaN and infinities included: the caller's
/// validation decides).
pub fn number(v: Option<Unknown<'_>>, field: &str) -> R<f64> {
    match v {
        Some(v) if v.get_type()? == ValueType::Number => Ok(f64::from_unknown(v)?),
        Some(v) => Err(invalid(
            field,
            format!("must be a number, got {}", type_name(&v)?),
        )),
        None => Err(invalid(field, "is required (a number)")),
    }
}

/// An optional number argument (`undefined` / `null` = absent).
pub fn opt_number(v: Option<Unknown<'_>>, field: &str) -> R<Option<f64>> {
    match present(v)? {
        Some(v) => number(Some(v), field).map(Some),
        None => Ok(None),
    }
}

/// A duration in float seconds, validated by the core (NaN, negative, infinite and
/// out-of-range values are `Invalid`).
pub fn opt_seconds(v: Option<Unknown<'_>>, field: &str) -> R<Option<std::time::Duration>> {
    match opt_number(v, field)? {
        Some(s) => Ok(Some(floyd::error::duration_from_secs(field, s)?)),
        None => Ok(None),
    }
}

/// A non-negative integer no larger than `max` (counts, versions, seeds).
pub fn integer(x: f64, field: &str, max: u64) -> R<u64> {
    if !x.is_finite() || x < 0.0 || x.fract() != 0.0 || x > max as f64 {
        return Err(invalid(
            field,
            format!("must be an integer from 0 to {max}, got {x}"),
        ));
    }
    Ok(x as u64)
}

/// An optional options object (`undefined` / `null` = no options).
pub fn opt_options<'a>(v: Option<Unknown<'a>>, field: &str) -> R<Option<Object<'a>>> {
    match present(v)? {
        Some(v) if v.get_type()? == ValueType::Object && !v.is_array()? => {
            Ok(Some(Object::from_unknown(v)?))
        }
        Some(v) => Err(invalid(
            field,
            format!("must be an object, got {}", type_name(&v)?),
        )),
        None => Ok(None),
    }
}

/// A property of an options object, `None` if missing or `undefined` / `null`.
pub fn prop<'a>(o: &Object<'a>, name: &str) -> R<Option<Unknown<'a>>> {
    Ok(present(Some(o.get_named_property::<Unknown<'a>>(name)?))?)
}

/// A JS value as JSON, under the rules in the module docs. `field` names the argument.
pub fn json(v: Option<Unknown<'_>>, field: &str) -> R<Value> {
    let Some(v) = v else {
        return Err(invalid(field, "is required"));
    };
    let mut budget = MAX_CONVERT_BYTES;
    let mut path = Path { parts: vec![] };
    to_json(v, field, &mut path, 0, &mut budget)
}

/// A required plain object argument (not an array), as JSON.
pub fn json_object(v: Option<Unknown<'_>>, field: &str) -> R<Value> {
    match v {
        Some(ref u) if u.get_type()? == ValueType::Object && !u.is_array()? => json(v, field),
        Some(u) => Err(invalid(
            field,
            format!("must be an object, got {}", type_name(&u)?),
        )),
        None => Err(invalid(field, "is required (an object)")),
    }
}

/// Path segments an error message shows.
const PATH_SHOWN: usize = 12;

/// The dotted path of the value being converted, built only when an error needs it.
struct Path {
    parts: Vec<Seg>,
}

enum Seg {
    Key(String),
    Index(u32),
}

impl Path {
    /// `spec.template.ports[1].port`; paths deeper than [`PATH_SHOWN`] segments are cut
    /// with `…` (a cyclic value would otherwise name a path thousands of bytes long).
    fn render(&self, root: &str) -> String {
        let mut out = String::new();
        for (i, p) in self.parts.iter().enumerate() {
            if i == PATH_SHOWN {
                out.push('…');
                break;
            }
            match p {
                Seg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        if out.is_empty() {
            root.to_string()
        } else {
            out
        }
    }
}

fn spend(budget: &mut usize, n: usize, root: &str, path: &Path) -> R<()> {
    if n > *budget {
        return Err(invalid(
            path.render(root),
            format!("the value is too large (over {MAX_CONVERT_BYTES} bytes as JSON)"),
        ));
    }
    *budget -= n;
    Ok(())
}

fn to_json(
    v: Unknown<'_>,
    root: &str,
    path: &mut Path,
    depth: usize,
    budget: &mut usize,
) -> R<Value> {
    let bad =
        |path: &Path, what: &str| invalid(path.render(root), format!("{what} is not a JSON value"));
    match v.get_type()? {
        ValueType::Null | ValueType::Undefined => {
            spend(budget, 4, root, path)?;
            Ok(Value::Null)
        }
        ValueType::Boolean => {
            spend(budget, 5, root, path)?;
            Ok(Value::Bool(bool::from_unknown(v)?))
        }
        ValueType::Number => {
            // The shortest JSON a number can take; the budget must never exceed what the
            // core would count, so that the core decides every close case.
            spend(budget, 1, root, path)?;
            let x = f64::from_unknown(v)?;
            // Integral values stay integers so that `replicas: 3` reaches the core as 3,
            // not 3.0 (serde_json keeps the distinction and the core's integer fields
            // reject floats).
            let n = if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 {
                if x < 0.0 {
                    Some(Number::from(x as i64))
                } else {
                    Some(Number::from(x as u64))
                }
            } else {
                Number::from_f64(x)
            };
            match n {
                Some(n) => Ok(Value::Number(n)),
                None => Err(invalid(
                    path.render(root),
                    format!("must be a finite number, got {x}"),
                )),
            }
        }
        ValueType::String => {
            // Measure before copying: a 100 MB string is refused without being copied.
            let js = v.coerce_to_string()?;
            spend(budget, js.utf8_len()? + 2, root, path)?;
            Ok(Value::String(js.into_utf8()?.into_owned()?))
        }
        ValueType::Symbol => Err(bad(path, "a Symbol")),
        ValueType::Function => Err(bad(path, "a function")),
        ValueType::BigInt => Err(bad(path, "a BigInt")),
        ValueType::Object => {
            if depth >= MAX_DEPTH {
                return Err(invalid(
                    path.render(root),
                    format!("is nested more than {MAX_DEPTH} levels deep (or is cyclic)"),
                ));
            }
            if v.is_array()? {
                let arr = Array::from_unknown(v)?;
                let len = arr.len();
                spend(budget, 2 + len as usize, root, path)?;
                let mut out = Vec::with_capacity((len as usize).min(4096));
                for i in 0..len {
                    path.parts.push(Seg::Index(i));
                    let item = match arr.get::<Unknown<'_>>(i)? {
                        Some(item) => to_json(item, root, path, depth + 1, budget)?,
                        None => Value::Null,
                    };
                    path.parts.pop();
                    out.push(item);
                }
                return Ok(Value::Array(out));
            }
            if v.is_date()? {
                return Err(bad(path, "a Date (pass an RFC 3339 string)"));
            }
            if v.is_typedarray()? || v.is_arraybuffer()? || v.is_dataview()? {
                return Err(bad(path, "binary data"));
            }
            if v.is_promise()? {
                return Err(bad(path, "a Promise"));
            }
            let obj = Object::from_unknown(v)?;
            // The keys as a JS array (for-in order, as `JSON.stringify`), read one at a
            // time: an object with 10⁶ keys is refused after the budget's worth of them.
            let names = Array::from_unknown(obj.get_property_names()?.to_unknown())?;
            let len = names.len();
            spend(budget, 2 + len as usize, root, path)?;
            let mut out = Map::new();
            for i in 0..len {
                let Some(k) = names.get::<String>(i)? else {
                    continue;
                };
                let item: Unknown<'_> = obj.get_named_property(&k)?;
                if item.get_type()? == ValueType::Undefined {
                    continue;
                }
                spend(budget, k.len() + 3, root, path)?;
                path.parts.push(Seg::Key(k));
                let value = to_json(item, root, path, depth + 1, budget)?;
                let Some(Seg::Key(k)) = path.parts.pop() else {
                    unreachable!("the key pushed above")
                };
                out.insert(k, value);
            }
            Ok(Value::Object(out))
        }
        _ => Err(bad(path, "this kind of value")),
    }
}

/// A queue item or limiter item: strings and numbers (their own keys: `1` and `"1"` differ).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Str(std::sync::Arc<str>),
    /// The number's bits, with `-0` folded into `0` so that equal numbers are one key.
    Num(u64),
}

impl Key {
    pub fn from_js(v: Option<Unknown<'_>>, field: &str) -> R<Key> {
        match v {
            Some(v) => match v.get_type()? {
                ValueType::String => Ok(Key::Str(String::from_unknown(v)?.into())),
                ValueType::Number => {
                    let x = f64::from_unknown(v)?;
                    if !x.is_finite() {
                        return Err(invalid(field, format!("must be a finite number, got {x}")));
                    }
                    let x = if x == 0.0 { 0.0 } else { x };
                    Ok(Key::Num(x.to_bits()))
                }
                _ => Err(invalid(
                    field,
                    format!("must be a string or a number, got {}", type_name(&v)?),
                )),
            },
            None => Err(invalid(field, "is required (a string or a number)")),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Key::Str(s) => Value::String(s.to_string()),
            Key::Num(bits) => {
                let x = f64::from_bits(*bits);
                Number::from_f64(x)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
    }
}

/// An argument of a call into JS: JSON text (parsed there, as [`Parsed`]) or a boolean.
pub enum JsArg {
    Json(String),
    Bool(bool),
}

impl napi::bindgen_prelude::ToNapiValue for JsArg {
    unsafe fn to_napi_value(
        env: napi::sys::napi_env,
        val: Self,
    ) -> napi::Result<napi::sys::napi_value> {
        match val {
            JsArg::Json(text) => json_parse(env, text),
            // SAFETY: forwarded unchanged from napi-rs, which calls this with a live `env`.
            JsArg::Bool(b) => unsafe { bool::to_napi_value(env, b) },
        }
    }
}

/// A JSON value returned to JS through `JSON.parse` of its serialized text rather than built
/// property by property: V8's parser builds the object several times faster than one napi
/// call per property, and, like every JSON value, a `"__proto__"` key becomes an own property.
pub struct Parsed(pub serde_json::Value);

impl napi::bindgen_prelude::TypeName for Parsed {
    fn type_name() -> &'static str {
        "any"
    }
    fn value_type() -> napi::ValueType {
        napi::ValueType::Unknown
    }
}

impl napi::bindgen_prelude::ToNapiValue for Parsed {
    unsafe fn to_napi_value(
        env: napi::sys::napi_env,
        val: Self,
    ) -> napi::Result<napi::sys::napi_value> {
        // Scalars gain nothing from a parse.
        if !matches!(val.0, Value::Object(_) | Value::Array(_)) {
            // SAFETY: forwarded unchanged from napi-rs, which calls this with a live `env`.
            return unsafe { Value::to_napi_value(env, val.0) };
        }
        json_parse(env, text_of(&val.0)?)
    }
}

/// A stored object returned to JS like [`Parsed`], serialised straight from the object (no
/// `Value` tree in between). `None` becomes `null`.
pub struct ParsedObject(pub Option<std::sync::Arc<floyd::Object>>);

impl napi::bindgen_prelude::TypeName for ParsedObject {
    fn type_name() -> &'static str {
        "any"
    }
    fn value_type() -> napi::ValueType {
        napi::ValueType::Unknown
    }
}

impl napi::bindgen_prelude::ToNapiValue for ParsedObject {
    unsafe fn to_napi_value(
        env: napi::sys::napi_env,
        val: Self,
    ) -> napi::Result<napi::sys::napi_value> {
        let Some(o) = val.0 else {
            // SAFETY: forwarded unchanged from napi-rs, which calls this with a live `env`.
            return unsafe { Value::to_napi_value(env, Value::Null) };
        };
        json_parse(env, text_of(&*o)?)
    }
}

/// `value` as JSON text.
fn text_of<T: serde::Serialize + ?Sized>(value: &T) -> napi::Result<String> {
    serde_json::to_string(value)
        .map_err(|e| napi::Error::from_reason(format!("serialize a result: {e}")))
}

/// A stored object as JSON text (for `floyd.js`, which parses it in JS).
pub fn obj_text(o: &floyd::Object) -> R<String> {
    Ok(text_of(o)?)
}

/// Stored objects as the text of a JSON array (for `floyd.js`, which parses it in JS).
pub fn objs_text(objs: &[std::sync::Arc<floyd::Object>]) -> R<String> {
    Ok(text_of(
        &objs.iter().map(|o| &**o).collect::<Vec<&floyd::Object>>(),
    )?)
}

type JsonParse = napi::bindgen_prelude::FunctionRef<String, Unknown<'static>>;

thread_local! {
    /// This thread's environment's `JSON.parse` (Node runs one environment per thread),
    /// found once instead of through three property lookups per returned value. Dropped by
    /// the environment's cleanup hook, while the environment can still release it.
    static JSON_PARSE: std::cell::RefCell<Option<JsonParse>> = const { std::cell::RefCell::new(None) };
}

/// `JSON.parse(text)` in `env`.
fn json_parse(raw: napi::sys::napi_env, text: String) -> napi::Result<napi::sys::napi_value> {
    let env = napi::Env::from_raw(raw);
    let cached = JSON_PARSE.with(|c| c.borrow().as_ref().map(|f| f.borrow_back(&env)));
    let parse = match cached {
        Some(parse) => parse?,
        None => {
            let json: Object<'_> = env.get_global()?.get_named_property("JSON")?;
            let parse: napi::bindgen_prelude::Function<'_, String, Unknown<'static>> =
                json.get_named_property("parse")?;
            let kept = parse.create_ref()?;
            env.add_env_cleanup_hook((), |()| {
                let _ = JSON_PARSE.try_with(|c| c.try_borrow_mut().map(|mut f| f.take()));
            })?;
            JSON_PARSE.with(|c| *c.borrow_mut() = Some(kept));
            parse
        }
    };
    // `JSON.parse` does not use its receiver.
    Ok(parse.call(text)?.raw())
}
