//! Parsing of Kubernetes resource quantities (`500m`, `2`, `1Gi`, `1e3`, `128974848`).

use thiserror::Error;

/// A quantity string that is not a valid Kubernetes quantity, or out of range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid quantity {input:?}: {reason}")]
pub struct QuantityError {
    /// The text that failed to parse.
    pub input: String,
    /// Why it failed.
    pub reason: &'static str,
}

fn err(input: &str, reason: &'static str) -> QuantityError {
    QuantityError {
        input: input.to_string(),
        reason,
    }
}

/// Parses a quantity into thousandths of its unit (CPU `500m` -> 500, `2` -> 2000), rounding
/// up as Kubernetes does for milli values.
pub fn parse_milli(input: &str) -> Result<i64, QuantityError> {
    scaled(input, 3)
}

/// Parses a quantity into whole units, rounding up (`1Gi` -> 1073741824, `1k` -> 1000).
pub fn parse_units(input: &str) -> Result<i64, QuantityError> {
    scaled(input, 0)
}

/// Parses a quantity that must be a whole number (extended resources such as `nvidia.com/gpu`).
pub fn parse_integer(input: &str) -> Result<i64, QuantityError> {
    let milli = parse_milli(input)?;
    if milli % 1000 != 0 {
        return Err(err(input, "must be a whole number"));
    }
    Ok(milli / 1000)
}

/// Value of `input` times 10^`decimals`, rounded up.
fn scaled(input: &str, decimals: u32) -> Result<i64, QuantityError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(err(input, "empty"));
    }
    let (sign, body) = match s.as_bytes()[0] {
        b'-' => (-1i128, &s[1..]),
        b'+' => (1, &s[1..]),
        _ => (1, s),
    };
    let num_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(num_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(err(input, "expected a number"));
    }
    // Binary suffixes multiply by 2^k, decimal ones by 10^e.
    let (binary_shift, decimal_exp): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        s if s.starts_with(['e', 'E']) => {
            let e: i32 = s[1..].parse().map_err(|_| err(input, "bad exponent"))?;
            if !(-30..=30).contains(&e) {
                return Err(err(input, "exponent out of range"));
            }
            (0, e)
        }
        _ => return Err(err(input, "unknown suffix")),
    };
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.len() + frac_part.len() > 30 {
        return Err(err(input, "too many digits"));
    }
    let digits: String = format!("{int_part}{frac_part}");
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits
            .parse()
            .map_err(|_| err(input, "expected a number"))?
    };
    // value = mantissa * 2^shift * 10^(decimal_exp - frac_len + decimals)
    let exp10 = decimal_exp - frac_part.len() as i32 + decimals as i32;
    let mut numerator = mantissa
        .checked_mul(1i128 << binary_shift)
        .ok_or_else(|| err(input, "too large"))?;
    let mut denominator: i128 = 1;
    if exp10 >= 0 {
        numerator = numerator
            .checked_mul(
                10i128
                    .checked_pow(exp10 as u32)
                    .ok_or_else(|| err(input, "too large"))?,
            )
            .ok_or_else(|| err(input, "too large"))?;
    } else {
        denominator = 10i128
            .checked_pow((-exp10) as u32)
            .ok_or_else(|| err(input, "too small"))?;
    }
    // Rounded up: (n + d - 1) / d, written so that it cannot overflow.
    let value = numerator / denominator + i128::from(numerator % denominator != 0);
    i64::try_from(value * sign).map_err(|_| err(input, "too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu() {
        assert_eq!(parse_milli("500m").unwrap(), 500);
        assert_eq!(parse_milli("2").unwrap(), 2000);
        assert_eq!(parse_milli("0.5").unwrap(), 500);
        assert_eq!(parse_milli("1.0001").unwrap(), 1001); // rounds up
        assert_eq!(parse_milli("100u").unwrap(), 1);
    }

    #[test]
    fn parses_memory() {
        assert_eq!(parse_units("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_units("128974848").unwrap(), 128_974_848);
        assert_eq!(parse_units("129e6").unwrap(), 129_000_000);
        assert_eq!(parse_units("123Mi").unwrap(), 123 << 20);
        assert_eq!(parse_units("1k").unwrap(), 1000);
        assert_eq!(parse_units("1.5Gi").unwrap(), 3 << 29);
    }

    #[test]
    fn integers_only_for_extended_resources() {
        assert_eq!(parse_integer("8").unwrap(), 8);
        assert!(parse_integer("0.5").is_err());
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "abc",
            "1x",
            "1..2",
            "--1",
            "1e99",
            "99999999999999999999999999999999Ei",
        ] {
            assert!(parse_units(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn large_values_are_errors_not_overflows() {
        // (2^67 - 1) * 2^60 is just below the top of i128.
        assert!(parse_units("147573952589.676412927Ei").is_err());
        assert_eq!(parse_units("7Ei").unwrap(), 7 << 60);
        assert!(parse_units("8Ei").is_err());
        assert!(parse_units("170141183460469231731687303715884105727").is_err());
        assert!(parse_units("9223372036854775808").is_err());
        assert_eq!(parse_units("9223372036854775807").unwrap(), i64::MAX);
        assert!(parse_milli("9223372036854775807").is_err());
        assert!(parse_units("-9223372036854775809").is_err());
        for digits in 1..=30 {
            for suffix in ["", "m", "Ei", "E", "e30", "e-30", "n"] {
                let s = format!("{}.{}{suffix}", "9".repeat(digits), "9".repeat(30 - digits));
                let _ = parse_milli(&s);
                let _ = parse_units(&s);
            }
        }
    }
}
