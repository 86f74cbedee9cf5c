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

    /// Scans a JSON object, keeping every attribute.
    pub fn parse(json: &'a [u8]) -> Result<Self, ContextError> {
        Context::parse_keeping(json, |_| true)
    }

    /// Scans a JSON object, keeping `key` and the attributes `keep` accepts;
    /// the others are checked but skipped without allocation. The whole text
    /// is still validated: bad JSON is refused exactly as [`Context::parse`]
    /// refuses it. Attributes whose names have escapes are always kept.
    pub fn parse_keeping(
        json: &'a [u8],
        keep: impl Fn(&str) -> bool,
    ) -> Result<Self, ContextError> {
        if let Some(ctx) = scan::object(json, &keep) {
            return Ok(ctx);
        }
        // Anything the scanner does not take (bad JSON, escapes, deep
        // nesting, unusual numbers) goes through serde_json, which gives
        // the error text or the value.
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

/// The fast path of [`Context::parse_keeping`]: a single pass over the
/// bytes that accepts a subset of what serde_json accepts (no escapes, no
/// control characters, nesting at most [`scan::MAX_DEPTH`]) and gives up
/// (`None`) on anything else, so serde_json stays the judge of bad input.
/// Kept values it cannot decode simply (negative or fractional numbers,
/// lists) are handed to serde_json as one token, so every value is
/// bit-identical to serde_json's reading.
mod scan {
    use super::{AttrValue, Context, Num};
    use serde::Deserialize;
    use smallvec::SmallVec;
    use std::borrow::Cow;

    /// Deepest nesting taken here (serde_json allows 128).
    pub const MAX_DEPTH: usize = 64;

    struct Scanner<'a> {
        /// The whole text, checked as UTF-8 once.
        text: &'a str,
        b: &'a [u8],
        i: usize,
    }

    /// Scans `json` as one object; `None` when it is not in the subset.
    pub fn object<'a>(json: &'a [u8], keep: &dyn Fn(&str) -> bool) -> Option<Context<'a>> {
        let text = std::str::from_utf8(json).ok()?;
        let mut s = Scanner {
            text,
            b: json,
            i: 0,
        };
        let mut attrs = SmallVec::new();
        s.ws();
        s.eat(b'{')?;
        s.ws();
        if s.peek()? == b'}' {
            s.i += 1;
        } else {
            loop {
                let name = s.string()?;
                s.ws();
                s.eat(b':')?;
                s.ws();
                if name == "key" || keep(name) {
                    let value = s.value()?;
                    attrs.push((Cow::Borrowed(name), value));
                } else {
                    s.skip(1)?;
                }
                s.ws();
                match s.next()? {
                    b',' => s.ws(),
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        s.ws();
        (s.i == s.b.len()).then_some(Context { attrs })
    }

    impl<'a> Scanner<'a> {
        fn peek(&self) -> Option<u8> {
            self.b.get(self.i).copied()
        }

        fn next(&mut self) -> Option<u8> {
            let c = self.peek()?;
            self.i += 1;
            Some(c)
        }

        fn eat(&mut self, c: u8) -> Option<()> {
            (self.next()? == c).then_some(())
        }

        fn ws(&mut self) {
            while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
                self.i += 1;
            }
        }

        /// A string without escapes or control characters, borrowed.
        fn string(&mut self) -> Option<&'a str> {
            self.eat(b'"')?;
            let start = self.i;
            let len = self.b[start..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
            self.i = start + len;
            self.eat(b'"')?;
            // Both ends are at ASCII quotes, so at character boundaries.
            self.text.get(start..start + len)
        }

        /// The extent of a number, checked against JSON's grammar; whether
        /// it is a plain non-negative integer.
        fn number(&mut self) -> Option<bool> {
            let mut plain = true;
            if self.peek() == Some(b'-') {
                self.i += 1;
                plain = false;
            }
            match self.next()? {
                b'0' => {}
                b'1'..=b'9' => self.digits(),
                _ => return None,
            }
            if self.peek() == Some(b'.') {
                self.i += 1;
                plain = false;
                self.digit()?;
                self.digits();
            }
            if let Some(b'e' | b'E') = self.peek() {
                self.i += 1;
                plain = false;
                if let Some(b'+' | b'-') = self.peek() {
                    self.i += 1;
                }
                self.digit()?;
                self.digits();
            }
            Some(plain)
        }

        fn digit(&mut self) -> Option<()> {
            self.next()?.is_ascii_digit().then_some(())
        }

        fn digits(&mut self) {
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
        }

        fn literal(&mut self, word: &[u8]) -> Option<()> {
            let end = self.i.checked_add(word.len())?;
            (self.b.get(self.i..end)? == word).then(|| self.i = end)
        }

        /// Skips (checking) one value at nesting `depth`.
        fn skip(&mut self, depth: usize) -> Option<()> {
            match self.peek()? {
                b'"' => self.string().map(drop),
                b'-' | b'0'..=b'9' => self.number().map(drop),
                b't' => self.literal(b"true"),
                b'f' => self.literal(b"false"),
                b'n' => self.literal(b"null"),
                b'[' if depth < MAX_DEPTH => {
                    self.i += 1;
                    self.ws();
                    if self.peek()? == b']' {
                        self.i += 1;
                        return Some(());
                    }
                    loop {
                        self.skip(depth + 1)?;
                        self.ws();
                        match self.next()? {
                            b',' => self.ws(),
                            b']' => return Some(()),
                            _ => return None,
                        }
                    }
                }
                b'{' if depth < MAX_DEPTH => {
                    self.i += 1;
                    self.ws();
                    if self.peek()? == b'}' {
                        self.i += 1;
                        return Some(());
                    }
                    loop {
                        self.string()?;
                        self.ws();
                        self.eat(b':')?;
                        self.ws();
                        self.skip(depth + 1)?;
                        self.ws();
                        match self.next()? {
                            b',' => self.ws(),
                            b'}' => return Some(()),
                            _ => return None,
                        }
                    }
                }
                _ => None,
            }
        }

        /// One kept value: strings, small integers and literals directly,
        /// anything else as serde_json reads its token.
        fn value(&mut self) -> Option<AttrValue<'a>> {
            let start = self.i;
            match self.peek()? {
                b'"' => return self.string().map(|s| AttrValue::Str(Cow::Borrowed(s))),
                b't' => return self.literal(b"true").map(|()| AttrValue::Bool(true)),
                b'f' => return self.literal(b"false").map(|()| AttrValue::Bool(false)),
                b'n' => return self.literal(b"null").map(|()| AttrValue::Null),
                b'-' | b'0'..=b'9' => {
                    // Up to 19 digits cannot overflow a u64.
                    if self.number()? && self.i - start <= 19 {
                        let n = self.b[start..self.i]
                            .iter()
                            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
                        return Some(AttrValue::Num(Num::U(n)));
                    }
                }
                _ => self.skip(1)?,
            }
            let token = &self.b[start..self.i];
            let mut de = serde_json::Deserializer::from_slice(token);
            let v = AttrValue::deserialize(&mut de).ok()?;
            de.end().ok()?;
            Some(v)
        }
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

    /// The reading serde_json alone gives (the path before the scanner).
    fn serde_reading(json: &[u8]) -> String {
        let mut de = serde_json::Deserializer::from_slice(json);
        let r = Context::deserialize(&mut de).and_then(|c| de.end().map(|()| c));
        format!("{:?}", r.map_err(|e| ContextError(e.to_string())))
    }

    const TEXTS: &[&str] = &[
        r#"{"key":"user-1","country":"US","plan":"free","beta":true}"#,
        " {\n\t\"a\" : [1, -2, 3.5e2, -0, 0, 18446744073709551615, 18446744073709551616, \"x\", [[]], {}] ,\r\"b\":null} ",
        r#"{"a":1,"a":2,"n":-9223372036854775808,"g":-1.0E-3,"u":"żółw","o":{"x":{"y":[1,{"z":null}]}}}"#,
        r#"{}"#,
        r#"{"f":1e400}"#,
        r#"{"esc":"a\"b","k\u0065y":"v"}"#,
        r#"{"bad":"\ud800"}"#,
        r#"{"o":{"bad":"\ud800"}}"#,
        "{\"ctl\":\"a\u{1}b\"}",
        r#"{"a":01}"#,
        r#"{"a":1.}"#,
        r#"{"a":.5}"#,
        r#"{"a":-}"#,
        r#"{"a":1e}"#,
        r#"{"a":tru}"#,
        r#"{"a":[1,]}"#,
        r#"{"a":{"b":1,}}"#,
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"{"a":1} x"#,
        r#"{"a":1}}"#,
        r#"[1,2]"#,
        r#""s""#,
        "",
        "   ",
        r#"{"a":"#,
        r#"{"a":"unterminated"#,
        r#"{a:1}"#,
        r#"{"a":NaN}"#,
    ];

    #[test]
    fn the_scanner_reads_and_refuses_exactly_as_serde_json() {
        let mut texts: Vec<Vec<u8>> = TEXTS.iter().map(|t| t.as_bytes().to_vec()).collect();
        texts.push(b"{\"a\":\"\xff\"}".to_vec());
        texts.push(b"{\"\xc3\xa9\":1,\"b\":\"\xc3\"}".to_vec());
        let deep = |n: usize| format!("{{\"d\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        for n in [10, 63, 64, 65, 127, 128, 200] {
            texts.push(deep(n).into_bytes());
        }
        for text in &texts {
            let got = format!("{:?}", Context::parse(text));
            assert_eq!(
                got,
                serde_reading(text),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn plain_contexts_take_the_scanner() {
        for text in [TEXTS[0], TEXTS[1], TEXTS[2], TEXTS[3]] {
            assert!(scan::object(text.as_bytes(), &|_| true).is_some(), "{text}");
        }
    }

    #[test]
    fn unread_attributes_are_checked_but_not_kept() {
        let text = br#"{"key":"k","a":1,"b":[1,{"c":"d"}],"a":"again"}"#;
        let ctx = Context::parse_keeping(text, |n| n == "a").unwrap();
        assert_eq!(ctx.key(), Some("k"));
        assert_eq!(ctx.get("a"), Some(&AttrValue::Str(Cow::Borrowed("again"))));
        assert_eq!(ctx.get("b"), None);
        assert_eq!(ctx.attrs.len(), 3);
        for bad in [
            &br#"{"key":"k","b":[1,}"#[..],
            br#"{"b":{"c":01}}"#,
            br#"{"b":"x"} y"#,
        ] {
            let err = Context::parse_keeping(bad, |_| false).unwrap_err();
            assert_eq!(Err::<(), _>(err), Context::parse(bad).map(drop));
        }
    }

    #[test]
    fn numbers_print_in_their_json_form() {
        let mut buf = NumText::default();
        assert_eq!(Num::U(42).json_text(&mut buf), "42");
        assert_eq!(Num::F(1.5).json_text(&mut buf), "1.5");
        assert_eq!(Num::I(-3).json_text(&mut buf), "-3");
    }
}
