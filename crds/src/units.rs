//! Typed sizes and durations as users write them in YAML.
//!
//! [`ByteSize`] accepts `1048576` or `"1Mi"`; [`HumanDuration`] accepts
//! `"500ms"`, `"2s"`, `"5m"`. Both serialise back to the short string form,
//! so generated config files read the way a person would write them.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::quantity::{format_bytes, parse_bytes, QuantityError};

/// A number of bytes, written as an integer or a Kubernetes quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn bytes(self) -> u64 {
        self.0
    }

    pub const fn kib(n: u64) -> Self {
        Self(n << 10)
    }

    pub const fn mib(n: u64) -> Self {
        Self(n << 20)
    }

    pub const fn gib(n: u64) -> Self {
        Self(n << 30)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_bytes(self.0))
    }
}

impl FromStr for ByteSize {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_bytes(s).map(Self)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes or a quantity such as 64Ki, 1Mi or 10Gi")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("size must not be negative, got {v}")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // Not `anyOf: [{integer, minimum}, {string, pattern}]`: a CRD schema must
        // be structural, kube's rewriter strips the types out of those branches,
        // and the typeless branches then accept anything. CEL checks both forms.
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "x-kubernetes-validations": [{
                "rule": "string(self).matches('^[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$')",
                "message": "must be a whole number of bytes or a quantity such as 64Ki, 1Mi, 10Gi or 500M",
                // Names the value: the API server's "Invalid value" shows only its type.
                "messageExpression": "string(self) + ' is not a whole number of bytes or a quantity such as 64Ki, 1Mi, 10Gi or 500M'"
            }]
        })
    }
}

/// A duration written as `500ms`, `2s`, `1m30s` or `1h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(n: u64) -> Self {
        Self(Duration::from_secs(n))
    }

    pub const fn millis(n: u64) -> Self {
        Self(Duration::from_millis(n))
    }

    pub const fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl FromStr for HumanDuration {
    type Err = humantime::DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim()).map(Self)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse()
            .map_err(|e| de::Error::custom(format!("{s:?} is not a duration such as 500ms, 2s or 5m: {e}")))
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "HumanDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(ns|us|ms|s|m|h|d) ?)+$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_size_accepts_numbers_and_quantities() {
        let v: Vec<ByteSize> = serde_json::from_str(r#"[1048576, "1Mi", "64Ki"]"#).expect("parse");
        assert_eq!(v, vec![ByteSize::mib(1), ByteSize::mib(1), ByteSize::kib(64)]);
        assert!(serde_json::from_str::<ByteSize>("-1").is_err());
        assert!(serde_json::from_str::<ByteSize>(r#""lots""#).is_err());
        assert_eq!(serde_json::to_string(&ByteSize::mib(4)).expect("ser"), r#""4Mi""#);
    }

    #[test]
    fn durations_round_trip() {
        let d: HumanDuration = serde_json::from_str(r#""1m30s""#).expect("parse");
        assert_eq!(d.get(), Duration::from_secs(90));
        let back: HumanDuration = serde_json::from_str(&serde_json::to_string(&d).expect("ser")).expect("parse");
        assert_eq!(back, d);
        assert!(serde_json::from_str::<HumanDuration>(r#""soon""#).is_err());
    }
}
