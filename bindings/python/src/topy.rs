//! A serde `Serializer` that builds Python values directly: stored objects become dicts
//! without the intermediate `serde_json::Value` tree (which cost as much as the dicts
//! themselves on every `get`, `list` and watch event).
//!
//! It covers what the core's objects serialise to — the JSON data model: `None`, bools,
//! 64-bit integers, floats, strings, sequences, maps with string keys and structs. Anything
//! else (enum variants carrying data, bytes, non-string map keys) is an `Internal` error,
//! never a panic. Key order follows serde: struct fields in declaration order, maps in their
//! own order (sorted for `BTreeMap` and `serde_json::Map`).

use std::fmt;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString};
use serde::ser::{self, Serialize};

use crate::cache::{StaticCache, static_id};

/// Serialises `value` into a Python object.
pub fn to_py<'py, T: Serialize + ?Sized>(
    py: Python<'py>,
    value: &T,
) -> PyResult<Bound<'py, PyAny>> {
    value.serialize(PySer { py }).map_err(|e| match e {
        SerError::Py(e) => e,
        SerError::Unsupported(what) => crate::errors::raise(
            py,
            floyd::ErrorKind::Internal,
            &format!("internal: cannot convert {what} to Python"),
            None,
        ),
    })
}

#[derive(Debug)]
pub enum SerError {
    Py(PyErr),
    Unsupported(String),
}

impl fmt::Display for SerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerError::Py(e) => write!(f, "{e}"),
            SerError::Unsupported(w) => write!(f, "unsupported value: {w}"),
        }
    }
}

impl std::error::Error for SerError {}

impl ser::Error for SerError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SerError::Unsupported(msg.to_string())
    }
}

impl From<PyErr> for SerError {
    fn from(e: PyErr) -> Self {
        SerError::Py(e)
    }
}

impl From<std::convert::Infallible> for SerError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

type R<'py> = Result<Bound<'py, PyAny>, SerError>;

#[derive(Clone, Copy)]
struct PySer<'py> {
    py: Python<'py>,
}

fn unsupported<T>(what: &str) -> Result<T, SerError> {
    Err(SerError::Unsupported(what.to_string()))
}

impl<'py> ser::Serializer for PySer<'py> {
    type Ok = Bound<'py, PyAny>;
    type Error = SerError;
    type SerializeSeq = SeqSer<'py>;
    type SerializeTuple = SeqSer<'py>;
    type SerializeTupleStruct = SeqSer<'py>;
    type SerializeTupleVariant = ser::Impossible<Bound<'py, PyAny>, SerError>;
    type SerializeMap = MapSer<'py>;
    type SerializeStruct = MapSer<'py>;
    type SerializeStructVariant = ser::Impossible<Bound<'py, PyAny>, SerError>;

    fn serialize_bool(self, v: bool) -> R<'py> {
        Ok(PyBool::new(self.py, v).to_owned().into_any())
    }
    fn serialize_i8(self, v: i8) -> R<'py> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> R<'py> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> R<'py> {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> R<'py> {
        Ok(v.into_pyobject(self.py)?.into_any())
    }
    fn serialize_u8(self, v: u8) -> R<'py> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> R<'py> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> R<'py> {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> R<'py> {
        Ok(v.into_pyobject(self.py)?.into_any())
    }
    fn serialize_f32(self, v: f32) -> R<'py> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> R<'py> {
        Ok(v.into_pyobject(self.py)?.into_any())
    }
    fn serialize_char(self, v: char) -> R<'py> {
        self.serialize_str(v.encode_utf8(&mut [0u8; 4]))
    }
    fn serialize_str(self, v: &str) -> R<'py> {
        Ok(PyString::new(self.py, v).into_any())
    }
    fn serialize_bytes(self, _: &[u8]) -> R<'py> {
        unsupported("bytes")
    }
    fn serialize_none(self) -> R<'py> {
        Ok(self.py.None().into_bound(self.py))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> R<'py> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> R<'py> {
        self.serialize_none()
    }
    fn serialize_unit_struct(self, _: &'static str) -> R<'py> {
        self.serialize_none()
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> R<'py> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> R<'py> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: &T,
    ) -> R<'py> {
        unsupported(&format!("enum variant {variant}"))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSer<'py>, SerError> {
        Ok(SeqSer {
            ser: self,
            items: Vec::with_capacity(len.unwrap_or(0)),
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer<'py>, SerError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<SeqSer<'py>, SerError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, SerError> {
        unsupported(&format!("enum variant {variant}"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<MapSer<'py>, SerError> {
        Ok(MapSer {
            ser: self,
            dict: PyDict::new(self.py),
            key: None,
        })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<MapSer<'py>, SerError> {
        self.serialize_map(None)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, SerError> {
        unsupported(&format!("enum variant {variant}"))
    }
}

pub struct SeqSer<'py> {
    ser: PySer<'py>,
    items: Vec<Bound<'py, PyAny>>,
}

impl<'py> SeqSer<'py> {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        self.items.push(value.serialize(self.ser)?);
        Ok(())
    }
    fn finish(self) -> R<'py> {
        Ok(PyList::new(self.ser.py, self.items)?.into_any())
    }
}

impl<'py> ser::SerializeSeq for SeqSer<'py> {
    type Ok = Bound<'py, PyAny>;
    type Error = SerError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        self.push(value)
    }
    fn end(self) -> R<'py> {
        self.finish()
    }
}

impl<'py> ser::SerializeTuple for SeqSer<'py> {
    type Ok = Bound<'py, PyAny>;
    type Error = SerError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        self.push(value)
    }
    fn end(self) -> R<'py> {
        self.finish()
    }
}

impl<'py> ser::SerializeTupleStruct for SeqSer<'py> {
    type Ok = Bound<'py, PyAny>;
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        self.push(value)
    }
    fn end(self) -> R<'py> {
        self.finish()
    }
}

pub struct MapSer<'py> {
    ser: PySer<'py>,
    dict: Bound<'py, PyDict>,
    key: Option<Bound<'py, PyAny>>,
}

impl<'py> ser::SerializeMap for MapSer<'py> {
    type Ok = Bound<'py, PyAny>;
    type Error = SerError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), SerError> {
        let k = key.serialize(self.ser)?;
        if !k.is_instance_of::<PyString>() {
            return unsupported("a map key that is not a string");
        }
        self.key = Some(k);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        let Some(k) = self.key.take() else {
            return unsupported("a map value without its key");
        };
        self.dict.set_item(k, value.serialize(self.ser)?)?;
        Ok(())
    }
    fn end(self) -> R<'py> {
        Ok(self.dict.into_any())
    }
}

/// Struct field names as Python strings, made once: every object has a dozen of them, and
/// a cached `str` skips the allocation, the UTF-8 decode and the hashing (CPython caches a
/// string's hash in the object) on every conversion. Keyed by the name's address — serde's
/// field names are `&'static str`, so one address is always one name. Interned, so `frompy`
/// recognises the keys of the dicts made here by their address.
static FIELD_NAMES: StaticCache<Py<PyString>, 128> = StaticCache::new();

/// Sets `dict[key] = value` with `key` from [`FIELD_NAMES`] (borrowed: no reference count
/// taken and dropped per field).
fn set_field<'py>(
    dict: &Bound<'py, PyDict>,
    key: &'static str,
    value: Bound<'py, PyAny>,
) -> PyResult<()> {
    let py = dict.py();
    match FIELD_NAMES.get_or_make(static_id(key), || PyString::intern(py, key).unbind()) {
        Some(s) => dict.set_item(s.bind(py), value),
        None => dict.set_item(PyString::intern(py, key), value),
    }
}

impl<'py> ser::SerializeStruct for MapSer<'py> {
    type Ok = Bound<'py, PyAny>;
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), SerError> {
        let value = value.serialize(self.ser)?;
        set_field(&self.dict, key, value)?;
        Ok(())
    }
    fn end(self) -> R<'py> {
        Ok(self.dict.into_any())
    }
}
