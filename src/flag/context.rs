//! The evaluation context: a flat JSON object scanned straight from the
//! request bytes. Strings borrow from the request where they have no escapes,
//! so a typical context costs no heap allocation.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use smallvec::SmallVec;

/// A context that is not a JSON object of attributes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed context: {0}")]
pub struct ContextError(pub String);

/// A JSON number as the context gave it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// A non-negative integer.
    U(u64),
    /// A negative integer.
    I(i64),
    /// Any other number.
    F(f64),
}

impl Num {
    /// The number as a double, for comparisons.
    pub fn as_f64(self) -> f64 {
        match self {
            Num::U(n) => n as f64,
            Num::I(n) => n as f64,
            Num::F(f) => f,
        }
    }

    /// Writes the number's JSON form (as serde_json prints it) into `buf`.
    pub fn json_text(self, buf: &mut NumText) -> &str {
        match self {
            Num::U(n) => buf.int.format(n),
            Num::I(n) => buf.int.format(n),
            Num::F(f) if f.is_finite() => buf.float.format_finite(f),
            Num::F(_) => "null",
        }
    }
}

/// Stack buffers for [`Num::json_text`].
#[derive(Default)]
pub struct NumText {
    int: itoa::Buffer,
    float: ryu::Buffer,
}

/// One attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue<'a> {
    /// A string.
    Str(Cow<'a, str>),
    /// A number.
    Num(Num),
    /// A boolean.
    Bool(bool),
    /// A list; a clause matches if any element matches.
    List(Vec<AttrValue<'a>>),
    /// A nested object: present (for `exists`) but matched by nothing else.
    Object,
    /// JSON null: treated as missing.
    Null,
}

/// A parsed context.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context<'a> {
    attrs: SmallVec<[(Cow<'a, str>, AttrValue<'a>); 8]>,
}

impl<'a> Context<'a> {
    /// A context with no attributes (as `FLAG.EVAL key` with no context).
    pub fn empty() -> Self {
        Context::default()
    }

    /// Scans a JSON object.
    pub fn parse(json: &'a [u8]) -> Result<Self, ContextError> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let ctx = Context::deserialize(&mut de).map_err(|e| ContextError(e.to_string()))?;
        de.end().map_err(|e| ContextError(e.to_string()))?;
        Ok(ctx)
    }

    /// An attribute's value; null counts as missing. The last duplicate wins.
    pub fn get(&self, name: &str) -> Option<&AttrValue<'a>> {
        self.attrs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .filter(|v| !matches!(v, AttrValue::Null))
    }

    /// The targeting key, when it is a string.
    pub fn key(&self) -> Option<&str> {
        match self.get("key") {
            Some(AttrValue::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// Adds an attribute (for building contexts in code and tests).
    pub fn with(mut self, name: &'a str, value: AttrValue<'a>) -> Self {
        self.attrs.push((Cow::Borrowed(name), value));
        self
    }
}

struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for AttrValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AttrValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an attribute value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(AttrValue::Bool(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(AttrValue::Num(Num::U(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(AttrValue::Num(if v >= 0 {
                    Num::U(v as u64)
                } else {
                    Num::I(v)
                }))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(AttrValue::Num(Num::F(v)))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(AttrValue::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(AttrValue::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(AttrValue::Str(Cow::Owned(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(AttrValue::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<AttrValue<'de>>()? {
                    items.push(item);
                }
                Ok(AttrValue::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(AttrValue::Object)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Context<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Context<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of attributes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut attrs = SmallVec::new();
                while let Some(CowStr(k)) = map.next_key::<CowStr<'de>>()? {
                    let v: AttrValue<'de> = map.next_value()?;
                    attrs.push((k, v));
                }
                Ok(Context { attrs })
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_borrow_from_the_request() {
        let json = br#"{"key":"user-1","age":42,"beta":true,"groups":["a","b"],"x":null}"#;
        let ctx = Context::parse(json).unwrap();
        assert_eq!(ctx.key(), Some("user-1"));
        assert!(matches!(
            ctx.get("key"),
            Some(AttrValue::Str(Cow::Borrowed(_)))
        ));
        assert_eq!(ctx.get("age"), Some(&AttrValue::Num(Num::U(42))));
        assert_eq!(ctx.get("x"), None);
        assert!(matches!(ctx.get("groups"), Some(AttrValue::List(l)) if l.len() == 2));
    }

    #[test]
    fn a_context_must_be_an_object() {
        assert!(Context::parse(b"[1,2]").is_err());
        assert!(Context::parse(b"{\"a\":").is_err());
        assert!(Context::parse(b"{} x").is_err());
    }

    #[test]
    fn numbers_print_in_their_json_form() {
        let mut buf = NumText::default();
        assert_eq!(Num::U(42).json_text(&mut buf), "42");
        assert_eq!(Num::F(1.5).json_text(&mut buf), "1.5");
        assert_eq!(Num::I(-3).json_text(&mut buf), "-3");
    }
}
