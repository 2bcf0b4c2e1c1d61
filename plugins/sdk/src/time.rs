//! Timestamp parsing: RFC 3339 / ISO 8601 date-times to Unix seconds (UTC),
//! fractional seconds truncated, numeric offsets applied.

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let chunk = self.bytes.get(self.pos..self.pos + n)?;
        let mut value = 0u32;
        for &b in chunk {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u32::from(b - b'0');
        }
        self.pos += n;
        Some(value)
    }

    fn eat(&mut self, accepted: &[u8]) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        if accepted.contains(&b) {
            self.pos += 1;
            Some(b)
        } else {
            None
        }
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM|±HHMM]` (also with a space
/// instead of `T`) into Unix seconds. Returns `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let mut c = Cursor {
        bytes: text.as_bytes(),
        pos: 0,
    };
    let year = c.digits(4)?;
    c.eat(b"-")?;
    let month = c.digits(2)?;
    c.eat(b"-")?;
    let day = c.digits(2)?;
    c.eat(b"Tt ")?;
    let hour = c.digits(2)?;
    c.eat(b":")?;
    let minute = c.digits(2)?;
    c.eat(b":")?;
    let second = c.digits(2)?;
    if c.eat(b".").is_some() {
        let start = c.pos;
        while c.bytes.get(c.pos).is_some_and(u8::is_ascii_digit) {
            c.pos += 1;
        }
        if c.pos == start {
            return None;
        }
    }
    let offset_seconds = match c.eat(b"Zz+-")? {
        b'Z' | b'z' => 0,
        sign => {
            let oh = c.digits(2)?;
            c.eat(b":");
            let om = c.digits(2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let magnitude = i64::from(oh * 3600 + om * 60);
            if sign == b'-' { -magnitude } else { magnitude }
        }
    };
    if c.pos != c.bytes.len() {
        return None;
    }
    let year = i64::from(year);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_seconds)
}

/// [`parse_rfc3339`] for a payload field: `Invalid` (a 400) naming `field`
/// when the text is not a date-time or lies outside years 1970-9999.
pub fn rfc3339(text: &str, field: &str) -> Result<i64, crate::types::ParseError> {
    let seconds = parse_rfc3339(text).ok_or_else(|| {
        crate::types::ParseError::Invalid(format!("{field} {text:?} is not an RFC 3339 date-time"))
    })?;
    crate::event::limits::unix_seconds(field, seconds)
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339;

    #[test]
    fn parses_utc_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("2026-01-01T12:00:00Z"), Some(1_767_268_800));
        assert_eq!(
            parse_rfc3339("2026-01-01T12:00:00.999Z"),
            Some(1_767_268_800)
        );
        assert_eq!(
            parse_rfc3339("2026-01-01T07:00:00-05:00"),
            Some(1_767_268_800)
        );
        assert_eq!(
            parse_rfc3339("2026-01-01T13:00:00+0100"),
            Some(1_767_268_800)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800));
    }

    #[test]
    fn rejects_malformed_dates() {
        for bad in [
            "",
            "2026-01-01",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00Zjunk",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
