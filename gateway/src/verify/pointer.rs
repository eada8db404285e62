//! RFC 6901 JSON pointers into a request body, without building the document.
//!
//! Finding a provider's `id` or `type` used to parse each body into a `serde_json::Value`,
//! allocating every string and object in it: ~70% of the ingest handler's own instructions
//! (callgrind). Here each object or array on the pointer's way is scanned once: keys are
//! compared where they lie, other members are skipped (`IgnoredAny`), the member wanted is
//! kept as raw text (`RawValue`), and only the value found is decoded. The answers are the
//! same as `Value::pointer`'s: the last of duplicate keys wins, indexes have no sign or
//! leading zero, and a body that is not one JSON document has no values.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A scalar the pointer finds in `body`: a string as it decodes, a number as `serde_json`
/// prints it; `None` when the body is not JSON, the pointer misses, or it ends on anything else.
pub fn scalar_at(body: &[u8], pointer: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let found = if pointer.is_empty() {
        serde_json::from_str::<&RawValue>(text).ok()?
    } else {
        let mut tokens = pointer.strip_prefix('/')?.split('/');
        let mut current = child(text, tokens.next()?)?;
        for token in tokens {
            current = child(current.get(), token)?;
        }
        current
    };
    let raw = found.get();
    match raw.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(raw).ok(),
        b'-' | b'0'..=b'9' => serde_json::from_str::<serde_json::Number>(raw).ok().map(|n| n.to_string()),
        _ => None,
    }
}

/// The member `token` (still escaped) of the object or array whose JSON text is `text`;
/// `None` also when `text` is not one JSON document.
fn child<'a>(text: &'a str, token: &str) -> Option<&'a RawValue> {
    let key = token.replace("~1", "/").replace("~0", "~");
    let index = match token.as_bytes() {
        [b'+', ..] => None,
        [b'0', _, ..] => None,
        _ => token.parse::<usize>().ok(),
    };
    let mut reader = serde_json::Deserializer::from_str(text);
    let found = reader.deserialize_any(Member { key: &key, index }).ok()?;
    reader.end().ok()?;
    found
}

/// Looks for one member while the deserializer scans an object or array.
struct Member<'k> {
    key: &'k str,
    index: Option<usize>,
}

impl<'de> Visitor<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut found = None;
        while let Some(wanted) = map.next_key_seed(KeyIs(self.key))? {
            if wanted {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        let mut found = None;
        let mut at = 0;
        loop {
            if Some(at) == self.index {
                found = seq.next_element::<&'de RawValue>()?;
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(found);
            }
            at += 1;
        }
    }

    // Scalars have no members.
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Whether an object's key is the one wanted, compared without copying it.
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::scalar_at;

    /// What the gateway did before: parse to a `Value`, then `Value::pointer`.
    fn by_value(body: &[u8], pointer: &str) -> Option<String> {
        let json: serde_json::Value = serde_json::from_slice(body).ok()?;
        match json.pointer(pointer)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    #[test]
    fn finds_what_value_pointer_finds() {
        let bodies: &[&str] = &[
            r#"{"id":"evt_1","type":"invoice.paid","data":{"object":{"id":"in_9","amount":1200}}}"#,
            r#"  {"id": 42, "type": null, "n": -1.5e3, "big": 18446744073709551616}  "#,
            r#"{"a/b":"slash","m~n":"tilde","":"empty key","arr":[10,"x",[true,"deep"]]}"#,
            r#"{"id":"first","id":"last","esc":"q\"uote \u00e9 \n"}"#,
            r#"{"items":[{"id":"a"},{"id":"b"}],"nested":{"items":[]}}"#,
            r#"["top", {"id": "in array"}]"#,
            r#""just a string""#,
            r#"7"#,
            r#"{"id":"evt_1"} trailing"#,
            r#"{"id":"evt_1""#,
            r#"not json"#,
            "",
        ];
        let pointers = [
            "",
            "/id",
            "/type",
            "/data/object/id",
            "/data/object/amount",
            "/n",
            "/big",
            "/a~1b",
            "/m~0n",
            "/",
            "/arr/0",
            "/arr/1",
            "/arr/2/1",
            "/arr/01",
            "/arr/+1",
            "/arr/-1",
            "/arr/9",
            "/esc",
            "/items/1/id",
            "/nested/items/0",
            "/1/id",
            "/0",
            "id",
            "/missing",
            "/id/deeper",
        ];
        for body in bodies {
            for pointer in pointers {
                assert_eq!(
                    scalar_at(body.as_bytes(), pointer),
                    by_value(body.as_bytes(), pointer),
                    "body {body:?}, pointer {pointer:?}"
                );
            }
        }
    }

    #[test]
    fn bodies_that_are_not_utf8_have_no_values() {
        assert_eq!(scalar_at(b"{\"id\":\"\xff\"}", "/id"), None);
    }
}
