//! Errors and panics at the boundary: core errors become JS `Error` objects with `code` (the
//! stable [`floyd::ErrorKind`] name) and, for `Invalid`, `field`; panics become
//! `code: 'Internal'`. Nothing here decides *whether* something is an error — the core does.

use std::panic::{AssertUnwindSafe, catch_unwind};

use napi::bindgen_prelude::{JsObjectValue, JsValue, PromiseRaw, Unknown};
use napi::{Env, JsError, Status};

/// A failure on its way out of an export: either a floyd error (still to be turned into a JS
/// error object) or a napi error (a pending JS exception, e.g. from a throwing getter, which
/// propagates to the caller unchanged).
pub enum Fail {
    Floyd(floyd::Error),
    Js(napi::Error),
}

impl From<floyd::Error> for Fail {
    fn from(e: floyd::Error) -> Self {
        Fail::Floyd(e)
    }
}

impl From<napi::Error> for Fail {
    fn from(e: napi::Error) -> Self {
        Fail::Js(e)
    }
}

pub type R<T> = Result<T, Fail>;

/// An `Invalid` failure naming `field`.
pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Fail {
    Fail::Floyd(floyd::Error::invalid(field, message))
}

/// The error for a caught panic. The message is the panic's, so a bug report can quote it.
pub fn panic_error(payload: Box<dyn std::any::Any + Send>) -> floyd::Error {
    let msg = if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "a panic with a non-string payload".to_string()
    };
    // A payload whose own Drop panics must not unwind from here; leak it instead.
    std::mem::forget(payload);
    floyd::Error::Internal(format!("panic in floyd: {msg}"))
}

/// Runs an export's body: a panic becomes an `Internal` error, a floyd error becomes a JS
/// `Error` with `code` (and `field`), a pending JS exception propagates unchanged.
pub fn guard<T>(env: &Env, f: impl FnOnce() -> R<T>) -> napi::Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(Fail::Js(e))) => Err(e),
        Ok(Err(Fail::Floyd(e))) => Err(into_js_error(env, &e)),
        Err(payload) => Err(into_js_error(env, &panic_error(payload))),
    }
}

/// Builds the JS `Error` for a floyd error: `message` is the core's message, `code` the
/// kind, `field` the field an `Invalid` error names. Falls back to a plain napi error if the
/// environment cannot build objects (it is tearing down).
pub fn into_js_error(env: &Env, e: &floyd::Error) -> napi::Error {
    build_js_error(env, e.kind().as_str(), &e.to_string(), e.field())
        .unwrap_or_else(|_| napi::Error::new(Status::GenericFailure, e.to_string()))
}

fn build_js_error(
    env: &Env,
    code: &str,
    message: &str,
    field: Option<&str>,
) -> napi::Result<napi::Error> {
    Ok(napi::Error::from(js_error_value(
        env, code, message, field,
    )?))
}

fn js_error_value<'e>(
    env: &'e Env,
    code: &str,
    message: &str,
    field: Option<&str>,
) -> napi::Result<Unknown<'e>> {
    let err = JsError::from(napi::Error::new(code, message.to_string()));
    let value: Unknown<'_> = err.into_unknown(*env);
    let mut obj = value.coerce_to_object()?;
    if let Some(field) = field {
        obj.set_named_property("field", field)?;
    }
    Ok(obj.to_unknown())
}

/// [`guard`] for exports that return a promise: a floyd error (bad arguments included) or a
/// panic becomes a *rejected* promise rather than a synchronous throw, so `.then(ok, err)`
/// and `.catch()` see every failure. An exception thrown by the caller's own code (a getter
/// on an argument) still propagates synchronously.
pub fn guard_promise<'e>(
    env: &'e Env,
    f: impl FnOnce() -> R<Unknown<'e>>,
) -> napi::Result<Unknown<'e>> {
    let e = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => return Ok(v),
        Ok(Err(Fail::Js(e))) => return Err(e),
        Ok(Err(Fail::Floyd(e))) => e,
        Err(payload) => panic_error(payload),
    };
    let value = js_error_value(env, e.kind().as_str(), &e.to_string(), e.field())?;
    Ok(PromiseRaw::<()>::reject(env, value)?.to_unknown())
}
