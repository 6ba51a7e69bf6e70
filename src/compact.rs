//! Serde adapters for state fields kept narrower in memory than changelog records hold them.
//!
//! A million customers' states are resident at once, so a field takes the fewest bytes its
//! values need; a record keeps the wider type it has always held, so the record format does
//! not change. Postcard's varints encode a value the same whatever the integer's width, so a
//! narrowed count writes the same bytes; a float kept narrower is written as the value it
//! keeps (rounded).

/// A count in the `u16` that the state keeps it in: saturating.
pub fn saturating_u16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// A `u16` count written as the `u32` that records hold; a larger stored count saturates.
pub mod u16_as_u32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u16, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(u32::from(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        u32::deserialize(d).map(super::saturating_u16)
    }
}

/// An `f32` written as the `f64` that records hold.
pub mod f32_as_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(f64::from(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        f64::deserialize(d).map(|v| v as f32)
    }
}

/// A `bfloat16` (8 bits of mantissa: 3 significant digits) written as the `f32` that records
/// hold.
pub mod bf16_as_f32 {
    use half::bf16;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &bf16, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f32(v.to_f32())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bf16, D::Error> {
        f32::deserialize(d).map(bf16::from_f32)
    }
}

/// `v` in a binary16, finite: beyond its largest value (65,504) it saturates.
pub fn saturating_f16(v: f64) -> half::f16 {
    half::f16::from_f64(v.clamp(-f64::from(half::f16::MAX), f64::from(half::f16::MAX)))
}

/// A binary16 (11 bits of mantissa: 3 significant digits, up to 65,504) written as the `f32`
/// that records hold; a larger recorded value saturates.
pub mod f16_as_f32 {
    use half::f16;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f16, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f32(v.to_f32())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f16, D::Error> {
        f32::deserialize(d).map(|v| super::saturating_f16(v.into()))
    }
}

#[cfg(test)]
mod tests {
    use half::{bf16, f16};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Narrow {
        #[serde(with = "super::u16_as_u32")]
        n: u16,
        #[serde(with = "super::f32_as_f64")]
        x: f32,
        #[serde(with = "super::bf16_as_f32")]
        h: bf16,
        #[serde(with = "super::f16_as_f32")]
        f: f16,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Wide {
        n: u32,
        x: f64,
        h: f32,
        f: f32,
    }

    #[test]
    fn narrow_fields_write_the_wide_records() {
        let narrow = Narrow {
            n: 300,
            x: 1.5,
            h: bf16::from_f32(72.5),
            f: f16::from_f32(0.375),
        };
        let wide = Wide {
            n: 300,
            x: 1.5,
            h: 72.5,
            f: 0.375,
        };
        let bytes = postcard::to_allocvec(&narrow).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&wide).unwrap());
        assert_eq!(postcard::from_bytes::<Narrow>(&bytes).unwrap(), narrow);
        // A count beyond the narrow type saturates; a finer value rounds.
        let big = postcard::to_allocvec(&Wide {
            n: 70_000,
            x: 0.1,
            h: 72.53,
            f: 1e9,
        })
        .unwrap();
        let back: Narrow = postcard::from_bytes(&big).unwrap();
        assert_eq!(back.n, u16::MAX);
        assert_eq!(back.x, 0.1f32);
        assert_eq!(back.h.to_f32(), 72.5);
        assert_eq!(back.f, f16::MAX);
        assert_eq!(super::saturating_f16(-1e9), f16::MIN);
        assert_eq!(super::saturating_f16(0.1).to_f64(), 0.0999755859375);
    }
}
