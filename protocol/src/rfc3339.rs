//! RFC 3339 timestamps in the exact text chrono's serde support writes
//! (`2026-11-22T03:00:00.123Z`: UTC, `Z`, fraction of 0, 3, 6 or 9 digits as needed),
//! formatted and parsed without going through `fmt` machinery.
//!
//! Every request carries two timestamps; chrono's `Display`-based serializer was the
//! largest single cost of encoding one. Anything outside the fast path (years beyond
//! 0..=9999, leap seconds, offsets other than `Z`, other fraction lengths) falls back to
//! chrono, so the accepted inputs and the written bytes are exactly chrono's.

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serializer, de};

/// Longest text the fast path writes: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const MAX_LEN: usize = 30;

fn push2(buf: &mut [u8; MAX_LEN], at: usize, v: u32) {
    buf[at] = b'0' + (v / 10 % 10) as u8;
    buf[at + 1] = b'0' + (v % 10) as u8;
}

/// Formats `t` as chrono's serde does, into `buf`; `None` outside the fast path.
fn format(t: &DateTime<Utc>, buf: &mut [u8; MAX_LEN]) -> Option<usize> {
    use chrono::Datelike;
    let year = t.year();
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    let year = year as u32;
    push2(buf, 0, year / 100);
    push2(buf, 2, year % 100);
    buf[4] = b'-';
    push2(buf, 5, t.month());
    buf[7] = b'-';
    push2(buf, 8, t.day());
    buf[10] = b'T';
    push2(buf, 11, t.hour());
    buf[13] = b':';
    push2(buf, 14, t.minute());
    buf[16] = b':';
    push2(buf, 17, t.second());
    let mut len = 19;
    let (digits, mut frac) = if nanos == 0 {
        (0, 0)
    } else if nanos.is_multiple_of(1_000_000) {
        (3, nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        (6, nanos / 1_000)
    } else {
        (9, nanos)
    };
    if digits > 0 {
        buf[len] = b'.';
        for i in (0..digits).rev() {
            buf[len + 1 + i] = b'0' + (frac % 10) as u8;
            frac /= 10;
        }
        len += 1 + digits;
    }
    buf[len] = b'Z';
    Some(len + 1)
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// Parses the fast-path shape; `None` sends the text to chrono.
fn parse_fast(s: &[u8]) -> Option<DateTime<Utc>> {
    if s.len() < 20 || s.last() != Some(&b'Z') {
        return None;
    }
    let sep = |i: usize, c: u8| s.get(i) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && sep(10, b'T') && sep(13, b':') && sep(16, b':')) {
        return None;
    }
    let year = digits(&s[0..4])?;
    let month = digits(&s[5..7])?;
    let day = digits(&s[8..10])?;
    let hour = digits(&s[11..13])?;
    let minute = digits(&s[14..16])?;
    let second = digits(&s[17..19])?;
    let rest = &s[19..s.len() - 1];
    let nanos = match rest.len() {
        0 => 0,
        4 | 7 | 10 if rest[0] == b'.' => {
            let frac = digits(&rest[1..])?;
            frac * 10u32.pow(10 - rest.len() as u32)
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let time = date.and_hms_nano_opt(hour, minute, second, nanos)?;
    Some(time.and_utc())
}

fn parse(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    match parse_fast(s.as_bytes()) {
        Some(t) => Ok(t),
        None => s.parse::<DateTime<Utc>>(),
    }
}

/// `#[serde(with = "rfc3339")]` for `DateTime<Utc>`.
pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    match format(t, &mut buf) {
        // The fast path writes ASCII only.
        Some(len) => s.serialize_str(std::str::from_utf8(&buf[..len]).unwrap_or_default()),
        None => serde::Serialize::serialize(t, s),
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = DateTime<Utc>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an RFC 3339 timestamp")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse(v).map_err(E::custom)
        }
    }
    d.deserialize_str(Visitor)
}

/// `#[serde(with = "rfc3339::option")]` for `Option<DateTime<Utc>>` (`null` when absent).
pub(crate) mod option {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        t: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(deserialize_with = "super::deserialize")] DateTime<Utc>);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// Our text equals chrono's serde text, and parses back, for fraction lengths,
    /// boundaries and the fallback cases.
    #[test]
    fn matches_chrono_exactly() {
        let cases = [
            Utc.timestamp_opt(0, 0).unwrap(),
            Utc.timestamp_opt(1_795_000_000, 123_000_000).unwrap(),
            Utc.timestamp_opt(1_795_000_000, 123_456_000).unwrap(),
            Utc.timestamp_opt(1_795_000_000, 123_456_789).unwrap(),
            Utc.timestamp_opt(1_795_000_000, 1).unwrap(),
            Utc.timestamp_opt(253_402_300_799, 999_999_999).unwrap(), // 9999-12-31
            Utc.timestamp_opt(253_402_300_800, 0).unwrap(),           // year 10000: fallback
            Utc.timestamp_opt(-62_167_219_200, 0).unwrap(),           // year 0
            Utc.timestamp_opt(-62_167_219_201, 0).unwrap(),           // year -1: fallback
        ];
        for t in cases {
            let want = serde_json::to_string(&t).unwrap();
            let mut ser = serde_json::Serializer::new(Vec::new());
            serialize(&t, &mut ser).unwrap();
            let got = String::from_utf8(ser.into_inner()).unwrap();
            assert_eq!(got, want, "{t:?}");
            let mut de = serde_json::Deserializer::from_str(&got);
            assert_eq!(deserialize(&mut de).unwrap(), t, "{got}");
        }
    }

    #[test]
    fn parses_what_chrono_parses_and_rejects_what_it_rejects() {
        for s in [
            "2026-11-22T03:00:00Z",
            "2026-11-22T03:00:00.5Z",
            "2026-11-22T03:00:00.12Z",
            "2026-11-22T03:00:00+02:00",
            "2026-11-22t03:00:00z",
            "2026-11-22 03:00:00Z",
        ] {
            let chrono: Result<DateTime<Utc>, _> = s.parse();
            assert_eq!(parse(s).ok(), chrono.ok(), "{s}");
        }
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T03:00:00.Z",
            "2026-11-22T03:00:00",
            "x026-11-22T03:00:00Z",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod properties {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn fast_text_is_chronos_text(secs in -70_000_000_000i64..300_000_000_000, nanos in 0u32..1_000_000_000, round in 0usize..4) {
            // Bias towards whole seconds, millis and micros, as real clocks produce.
            let nanos = match round { 0 => 0, 1 => nanos / 1_000_000 * 1_000_000, 2 => nanos / 1000 * 1000, _ => nanos };
            let t = Utc.timestamp_opt(secs, nanos).single().unwrap();
            let mut ser = serde_json::Serializer::new(Vec::new());
            serialize(&t, &mut ser).unwrap();
            let got = String::from_utf8(ser.into_inner()).unwrap();
            prop_assert_eq!(&got, &serde_json::to_string(&t).unwrap());
            let mut de = serde_json::Deserializer::from_str(&got);
            prop_assert_eq!(deserialize(&mut de).unwrap(), t);
        }
    }
}
