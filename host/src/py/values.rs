//! Dynamic conversion between Python values and component values by WIT type, for
//! `Instance.call_export` (exports beyond `wasmai:inference`, e.g. the sandbox probe's).

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use wasmtime::component::{Type, Val};

/// Python value -> component value of type `ty`: bool, int, float, str (also for `char`),
/// list (or bytes for `list<u8>`), tuple, None / value for `option`, `("ok", v)` / `("err", v)`
/// for `result` (v None for no payload), str for `enum`, dict for `record`. Other types
/// (variants, flags, resources, maps, streams) are refused. Errors are messages.
pub fn py_to_val(obj: &Bound<'_, PyAny>, ty: &Type) -> Result<Val, String> {
    fn ex<'a, 'py, T: pyo3::FromPyObject<'a, 'py>>(obj: &'a Bound<'py, PyAny>, what: &str) -> Result<T, String> {
        obj.extract::<T>().map_err(|_| {
            format!("expected {what}, got {}", obj.get_type().name().map_or("?".into(), |n| n.to_string()))
        })
    }
    Ok(match ty {
        Type::Bool => Val::Bool(ex(obj, "bool")?),
        Type::S8 => Val::S8(ex(obj, "s8")?),
        Type::U8 => Val::U8(ex(obj, "u8")?),
        Type::S16 => Val::S16(ex(obj, "s16")?),
        Type::U16 => Val::U16(ex(obj, "u16")?),
        Type::S32 => Val::S32(ex(obj, "s32")?),
        Type::U32 => Val::U32(ex(obj, "u32")?),
        Type::S64 => Val::S64(ex(obj, "s64")?),
        Type::U64 => Val::U64(ex(obj, "u64")?),
        Type::Float32 => Val::Float32(ex(obj, "f32")?),
        Type::Float64 => Val::Float64(ex(obj, "f64")?),
        Type::Char => {
            let s: String = ex(obj, "a one-character str")?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(format!("expected a one-character str, got {s:?}")),
            }
        }
        Type::String => Val::String(ex(obj, "str")?),
        Type::List(list) => {
            let elem = list.ty();
            if let (Type::U8, Ok(bytes)) = (&elem, obj.cast::<PyBytes>()) {
                Val::List(bytes.as_bytes().iter().map(|&b| Val::U8(b)).collect())
            } else {
                let mut items = Vec::new();
                for item in obj.try_iter().map_err(|_| "expected a list".to_string())? {
                    items.push(py_to_val(&item.map_err(|e| e.to_string())?, &elem)?);
                }
                Val::List(items)
            }
        }
        Type::Tuple(tuple) => {
            let items: Vec<Bound<'_, PyAny>> = ex(obj, "a tuple")?;
            if items.len() != tuple.types().len() {
                return Err(format!("expected a tuple of {}, got {}", tuple.types().len(), items.len()));
            }
            Val::Tuple(items.iter().zip(tuple.types()).map(|(x, t)| py_to_val(x, &t)).collect::<Result<_, _>>()?)
        }
        Type::Option(option) => {
            if obj.is_none() {
                Val::Option(None)
            } else {
                Val::Option(Some(Box::new(py_to_val(obj, &option.ty())?)))
            }
        }
        Type::Result(result) => {
            let (tag, value): (String, Bound<'_, PyAny>) = ex(obj, "(\"ok\" | \"err\", value)")?;
            let payload = |t: Option<Type>| -> Result<Option<Box<Val>>, String> {
                match t {
                    Some(t) => Ok(Some(Box::new(py_to_val(&value, &t)?))),
                    None if value.is_none() => Ok(None),
                    None => Err(format!("the {tag} case has no payload: give None")),
                }
            };
            match tag.as_str() {
                "ok" => Val::Result(Ok(payload(result.ok())?)),
                "err" => Val::Result(Err(payload(result.err())?)),
                _ => return Err(format!("a result is (\"ok\", value) or (\"err\", value), not {tag:?}")),
            }
        }
        Type::Enum(e) => {
            let s: String = ex(obj, "str (an enum case)")?;
            if !e.names().any(|n| n == s) {
                return Err(format!("{s:?} is not a case of the enum"));
            }
            Val::Enum(s)
        }
        Type::Record(record) => {
            let dict = obj.cast::<PyDict>().map_err(|_| "expected a dict (record)".to_string())?;
            let mut fields = Vec::new();
            for f in record.fields() {
                let item = dict
                    .get_item(f.name)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("record field '{}' is missing", f.name))?;
                fields.push((f.name.to_string(), py_to_val(&item, &f.ty)?));
            }
            Val::Record(fields)
        }
        other => return Err(format!("arguments of type {other:?} are not supported")),
    })
}

/// Component value -> Python, the inverse of `py_to_val` (lists as lists, variants as
/// `(case, payload or None)`, flags as a list of names). Resources, maps and streams are refused.
pub fn val_to_py(py: Python<'_>, v: &Val) -> Result<Py<PyAny>, String> {
    use pyo3::IntoPyObjectExt;
    let r = |x: PyResult<Py<PyAny>>| x.map_err(|e| e.to_string());
    let tagged = |tag: &str, payload: &Option<Box<Val>>| -> Result<Py<PyAny>, String> {
        let value = match payload {
            Some(p) => val_to_py(py, p)?,
            None => py.None(),
        };
        r((tag.to_string(), value).into_py_any(py))
    };
    match v {
        Val::Bool(b) => r(b.into_py_any(py)),
        Val::S8(x) => r(x.into_py_any(py)),
        Val::U8(x) => r(x.into_py_any(py)),
        Val::S16(x) => r(x.into_py_any(py)),
        Val::U16(x) => r(x.into_py_any(py)),
        Val::S32(x) => r(x.into_py_any(py)),
        Val::U32(x) => r(x.into_py_any(py)),
        Val::S64(x) => r(x.into_py_any(py)),
        Val::U64(x) => r(x.into_py_any(py)),
        Val::Float32(x) => r(x.into_py_any(py)),
        Val::Float64(x) => r(x.into_py_any(py)),
        Val::Char(c) => r(c.to_string().into_py_any(py)),
        Val::String(s) => r(s.into_py_any(py)),
        Val::Enum(s) => r(s.into_py_any(py)),
        Val::List(items) | Val::FixedLengthList(items) | Val::Tuple(items) => {
            let converted = items.iter().map(|x| val_to_py(py, x)).collect::<Result<Vec<_>, _>>()?;
            if matches!(v, Val::Tuple(_)) {
                r(pyo3::types::PyTuple::new(py, converted).and_then(|t| t.into_py_any(py)))
            } else {
                r(converted.into_py_any(py))
            }
        }
        Val::Record(fields) => {
            let d = PyDict::new(py);
            for (k, x) in fields {
                d.set_item(k, val_to_py(py, x)?).map_err(|e| e.to_string())?;
            }
            r(d.into_py_any(py))
        }
        Val::Variant(case, payload) => tagged(case, payload),
        Val::Option(None) => Ok(py.None()),
        Val::Option(Some(x)) => val_to_py(py, x),
        Val::Result(Ok(payload)) => tagged("ok", payload),
        Val::Result(Err(payload)) => tagged("err", payload),
        Val::Flags(names) => r(names.clone().into_py_any(py)),
        other => Err(format!("results of this kind are not supported: {other:?}")),
    }
}
