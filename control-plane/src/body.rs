//! Request input: a JSON body read field by field, and a query string read
//! parameter by parameter, so that every bad input (unreadable body, bad
//! JSON, unknown, repeated or mistyped field) is a 400 naming the field,
//! never a framework's plain-text rejection.

use crate::errors::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Largest body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The bytes of a body, or the 413/400 that says why not.
pub fn bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(MAX_BODY)
        } else {
            ApiError::invalid("body", "body could not be read")
        }
    })
}

/// The fields of a JSON object body (or of an object inside it, whose
/// fields are named `outer.inner` in errors).
pub struct Fields(Map<String, Value>, String);

impl Fields {
    /// Parses a JSON object whose fields are all `known`; an empty body counts
    /// as `{}` when `empty_ok`.
    pub fn parse(bytes: &[u8], known: &[&str], empty_ok: bool) -> Result<Fields, ApiError> {
        if empty_ok && bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields(Map::new(), String::new()));
        }
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::invalid("body", format!("body is not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(ApiError::invalid("body", "body must be a JSON object"));
        };
        Fields::known(map, String::new(), known)
    }

    fn known(map: Map<String, Value>, prefix: String, known: &[&str]) -> Result<Fields, ApiError> {
        if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
            let unknown = format!("{prefix}{unknown}");
            return Err(ApiError::invalid(
                &unknown,
                format!("unknown field: {unknown}"),
            ));
        }
        Ok(Fields(map, prefix))
    }

    /// The name of `field` in errors.
    fn name(&self, field: &str) -> String {
        format!("{}{field}", self.1)
    }

    /// An object field whose fields are all `known`; absent and `null` are
    /// `None`.
    pub fn nested(&mut self, field: &str, known: &[&str]) -> Result<Option<Fields>, ApiError> {
        let name = self.name(field);
        match self.0.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => Fields::known(map, format!("{name}."), known).map(Some),
            Some(_) => Err(ApiError::invalid(
                &name,
                format!("{name} must be a JSON object"),
            )),
        }
    }

    /// A string field; absent and `null` are `None`.
    pub fn string(&mut self, field: &str) -> Result<Option<String>, ApiError> {
        let value = self.0.remove(field);
        let field = &self.name(field);
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::invalid(
                field,
                format!("{field} must be a string"),
            )),
        }
    }

    /// An array-of-strings field; absent and `null` are `None`.
    pub fn strings(&mut self, field: &str) -> Result<Option<Vec<String>>, ApiError> {
        let value = self.0.remove(field);
        let field = &self.name(field);
        let wrong = || ApiError::invalid(field, format!("{field} must be an array of strings"));
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    _ => Err(wrong()),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(_) => Err(wrong()),
        }
    }

    /// A JSON object field; absent and `null` are `None`.
    pub fn object(&mut self, field: &str) -> Result<Option<Map<String, Value>>, ApiError> {
        match self.0.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(_) => Err(ApiError::invalid(
                field,
                format!("{field} must be a JSON object"),
            )),
        }
    }

    /// A field a `PATCH` may clear: absent `None`, `null` `Some(None)`, else
    /// what `read` makes of it.
    pub fn clearable<T>(
        &mut self,
        field: &str,
        read: impl FnOnce(&mut Fields, &str) -> Result<Option<T>, ApiError>,
    ) -> Result<Option<Option<T>>, ApiError> {
        if matches!(self.0.get(field), Some(Value::Null)) {
            self.0.remove(field);
            return Ok(Some(None));
        }
        Ok(read(self, field)?.map(Some))
    }

    /// A 400 for the first of `fields` that is `null`.
    pub fn refuse_null(&self, fields: &[&str]) -> Result<(), ApiError> {
        match fields
            .iter()
            .find(|f| matches!(self.0.get(**f), Some(Value::Null)))
        {
            Some(field) => Err(ApiError::invalid(
                field,
                format!("{field} must not be null"),
            )),
            None => Ok(()),
        }
    }

    /// A non-negative integer field; absent and `null` are `None`.
    pub fn integer(&mut self, field: &str) -> Result<Option<u64>, ApiError> {
        let value = self.0.remove(field);
        let field = &self.name(field);
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(_) => Err(ApiError::invalid(
                field,
                format!("{field} must be a non-negative integer"),
            )),
        }
    }

    /// A boolean field; absent and `null` are `None`.
    pub fn boolean(&mut self, field: &str) -> Result<Option<bool>, ApiError> {
        let value = self.0.remove(field);
        let field = &self.name(field);
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(ApiError::invalid(
                field,
                format!("{field} must be true or false"),
            )),
        }
    }
}

/// The parameters of a query string (`None`: no query) by name, each one of
/// `known` and given at most once; `api_key` is a credential (SPEC §2) and
/// left out.
pub fn query_params(
    query: Option<&str>,
    known: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let mut params = HashMap::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if name == "api_key" {
            continue;
        }
        if !known.contains(&name.as_ref()) {
            return Err(ApiError::invalid(
                &name,
                format!("unknown query parameter: {name}"),
            ));
        }
        if params
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(ApiError::invalid(
                &name,
                format!("{name} must be given at most once"),
            ));
        }
    }
    Ok(params)
}

/// `value`, or a 400 saying that `field` is required.
pub fn required<T>(value: Option<T>, field: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::invalid(field, format!("{field} is required")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::Invalid { field, message } => {
                assert!(message.contains(&field), "{message} names {field}");
                field
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let parse = |b: &str| {
            Fields::parse(b.as_bytes(), &["a"], false)
                .err()
                .map(field_of)
        };
        assert_eq!(parse("{"), Some("body".into()));
        assert_eq!(parse("[]"), Some("body".into()));
        assert_eq!(parse(""), Some("body".into()));
        assert_eq!(parse(r#"{"a":1,"zz":2}"#), Some("zz".into()));
        assert_eq!(parse(r#"{"a":1}"#), None);
    }

    #[test]
    fn typed_fields() {
        let mut f = Fields::parse(
            br#"{"s":"x","n":null,"l":["a"],"i":3}"#,
            &["s", "n", "l", "i"],
            false,
        )
        .unwrap();
        assert_eq!(f.string("s").unwrap(), Some("x".into()));
        assert_eq!(f.string("n").unwrap(), None);
        assert_eq!(f.strings("l").unwrap(), Some(vec!["a".into()]));
        assert_eq!(f.integer("i").unwrap(), Some(3));
        assert_eq!(f.string("missing").unwrap(), None);
        let mut bad = Fields::parse(br#"{"s":1,"l":[1],"i":-1}"#, &["s", "l", "i"], false).unwrap();
        assert_eq!(field_of(bad.string("s").unwrap_err()), "s");
        assert_eq!(field_of(bad.strings("l").unwrap_err()), "l");
        assert_eq!(field_of(bad.integer("i").unwrap_err()), "i");
        assert!(Fields::parse(b"  ", &[], true).is_ok());
    }

    #[test]
    fn nested_fields_are_named_with_their_object() {
        let mut f = Fields::parse(
            br#"{"o":{"i":-1,"zz":1},"p":{"i":2},"q":3}"#,
            &["o", "p", "q"],
            false,
        )
        .unwrap();
        assert_eq!(field_of(f.nested("o", &["i"]).err().unwrap()), "o.zz");
        let mut p = f.nested("p", &["i"]).unwrap().unwrap();
        assert_eq!(p.integer("i").unwrap(), Some(2));
        assert_eq!(field_of(f.nested("q", &["i"]).err().unwrap()), "q");
        assert!(f.nested("absent", &[]).unwrap().is_none());
        let mut bad = Fields::parse(br#"{"o":{"i":-1}}"#, &["o"], false).unwrap();
        let mut o = bad.nested("o", &["i"]).unwrap().unwrap();
        assert_eq!(field_of(o.integer("i").unwrap_err()), "o.i");
    }
}
