//! Functions of one float: math (`abs`, `ceil`, `exp`, `ln`, `round`, ...),
//! trigonometry, `clamp*`, `sgn`, and the calendar functions of a Unix
//! timestamp in seconds (`day_of_month`, `hour`, ...; UTC).
//!
//! Contract with the evaluator: it calls the function for every float sample
//! of the vector argument (dropping `__name__` as PromQL does), with the
//! scalar arguments in call order after the vector; first it asks
//! [`produces_output`], which is false when the arguments make the whole
//! call return an empty vector (`clamp` with `min > max`). The calendar
//! functions without an argument take the evaluation time: the evaluator
//! passes `eval_time_ms as f64 / 1000.0`. `pi()` is the constant
//! `std::f64::consts::PI` and not listed here.

use super::ElementwiseFunction;

/// The function called `name`, if it maps one float to one float.
pub fn lookup(name: &str) -> Option<ElementwiseFunction> {
    let f: ElementwiseFunction = match name {
        "abs" => |v, _| v.abs(),
        "ceil" => |v, _| v.ceil(),
        "floor" => |v, _| v.floor(),
        "exp" => |v, _| v.exp(),
        "ln" => |v, _| v.ln(),
        "log2" => |v, _| log2(v),
        "log10" => |v, _| log10(v),
        "sqrt" => |v, _| v.sqrt(),
        "round" => round,
        "sgn" => |v, _| sgn(v),
        "clamp" => clamp,
        "clamp_min" => clamp_min,
        "clamp_max" => clamp_max,
        "sin" => |v, _| v.sin(),
        "cos" => |v, _| v.cos(),
        "tan" => |v, _| v.tan(),
        "asin" => |v, _| v.asin(),
        "acos" => |v, _| v.acos(),
        "atan" => |v, _| v.atan(),
        "sinh" => |v, _| v.sinh(),
        "cosh" => |v, _| v.cosh(),
        "tanh" => |v, _| v.tanh(),
        "asinh" => |v, _| v.asinh(),
        "acosh" => |v, _| v.acosh(),
        "atanh" => |v, _| v.atanh(),
        // Multiplied first, then divided, like the reference.
        "deg" => |v, _| v * 180.0 / std::f64::consts::PI,
        "rad" => |v, _| v * std::f64::consts::PI / 180.0,
        "day_of_month" => |v, _| calendar(v, |d| d.day as f64),
        "day_of_week" => |v, _| calendar(v, |d| d.weekday as f64),
        "day_of_year" => |v, _| calendar(v, |d| d.day_of_year as f64),
        "days_in_month" => |v, _| calendar(v, |d| days_in_month(d.year, d.month) as f64),
        "hour" => |v, _| calendar(v, |d| d.hour as f64),
        "minute" => |v, _| calendar(v, |d| d.minute as f64),
        "month" => |v, _| calendar(v, |d| d.month as f64),
        "year" => |v, _| calendar(v, |d| d.year as f64),
        _ => return None,
    };
    Some(f)
}

/// The scalar arguments the function called `name` takes after the vector:
/// `(required, optional)`; `None` for names [`lookup`] does not know.
/// `round` takes an optional `to_nearest`; the calendar functions may also
/// be called with no vector at all (see the module doc).
pub fn arg_count(name: &str) -> Option<(usize, usize)> {
    lookup(name)?;
    Some(match name {
        "round" => (0, 1),
        "clamp_min" | "clamp_max" => (1, 0),
        "clamp" => (2, 0),
        _ => (0, 0),
    })
}

/// False when the call's arguments make its result empty whatever the
/// samples: `clamp(v, min, max)` with `max < min` (NaN bounds do not count:
/// they make every value NaN instead).
pub fn produces_output(name: &str, args: &[f64]) -> bool {
    match (name, args) {
        ("clamp", &[min, max]) => max.partial_cmp(&min) != Some(std::cmp::Ordering::Less),
        _ => true,
    }
}

/// The larger of two floats as PromQL computes it: `+Inf` wins over NaN,
/// NaN over everything else, `+0` over `-0`.
pub fn promql_max(a: f64, b: f64) -> f64 {
    if a == f64::INFINITY || b == f64::INFINITY {
        f64::INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { b } else { a }
    } else if a > b {
        a
    } else {
        b
    }
}

/// The smaller of two floats as PromQL computes it: `-Inf` wins over NaN,
/// NaN over everything else, `-0` over `+0`.
pub fn promql_min(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY || b == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { a } else { b }
    } else if a < b {
        a
    } else {
        b
    }
}

/// Args: `[min, max]`. The evaluator drops the samples when
/// [`produces_output`] says so; called anyway, the result is `min`.
fn clamp(v: f64, args: &[f64]) -> f64 {
    match args {
        &[min, max] => promql_max(min, promql_min(max, v)),
        _ => f64::NAN,
    }
}

/// Args: `[min]`.
fn clamp_min(v: f64, args: &[f64]) -> f64 {
    match args {
        &[min] => promql_max(min, v),
        _ => f64::NAN,
    }
}

/// Args: `[max]`.
fn clamp_max(v: f64, args: &[f64]) -> f64 {
    match args {
        &[max] => promql_min(max, v),
        _ => f64::NAN,
    }
}

/// Args: `[]` or `[to_nearest]` (default 1). Rounds to the nearest multiple
/// of `to_nearest`, ties towards +Inf (`round(-2.5) = -2`). Divides by the
/// inverse of `to_nearest`, which keeps `round(x, 0.1)` free of artifacts
/// like `0.30000000000000004`.
fn round(v: f64, args: &[f64]) -> f64 {
    let to_nearest = args.first().copied().unwrap_or(1.0);
    let inverse = 1.0 / to_nearest;
    (v * inverse + 0.5).floor() / inverse
}

fn sgn(v: f64) -> f64 {
    if v < 0.0 {
        -1.0
    } else if v > 0.0 {
        1.0
    } else {
        // ±0 and NaN stay as they are.
        v
    }
}

/// `log2` exact for powers of two (as everywhere), and otherwise computed
/// from the natural logarithm of the mantissa like the reference, so that
/// results agree to the last bit.
fn log2(v: f64) -> f64 {
    let Some((mantissa, exponent)) = frexp(v) else {
        return v.log2();
    };
    if mantissa == 0.5 {
        return f64::from(exponent - 1);
    }
    mantissa.ln() * std::f64::consts::LOG2_E + f64::from(exponent)
}

/// Through `log2` like the reference, for the same last bit.
fn log10(v: f64) -> f64 {
    log2(v) * std::f64::consts::LOG10_2
}

/// `v = mantissa * 2^exponent` with `mantissa` in `[0.5, 1)`, for finite
/// non-zero `v`.
fn frexp(v: f64) -> Option<(f64, i32)> {
    if v == 0.0 || !v.is_finite() {
        return None;
    }
    // Scale subnormals into the normal range first.
    let (v, bias) = if v.abs() < f64::MIN_POSITIVE {
        (v * (1u64 << 52) as f64, -52)
    } else {
        (v, 0)
    };
    let bits = v.to_bits();
    let raw_exponent = ((bits >> 52) & 0x7ff) as i32;
    let exponent = raw_exponent - 1022 + bias;
    let mantissa = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    Some((mantissa, exponent))
}

/// A UTC civil date and time.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Civil {
    year: i128,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    /// 0 = Sunday.
    weekday: u32,
    /// 1-based.
    day_of_year: u32,
}

/// Applies `field` to the UTC date of the Unix time `seconds`, matching the
/// reference's x86-64 build in two quirks: seconds truncate to an i64, with
/// values that do not fit (NaN and infinities included) becoming i64::MIN;
/// and seconds before its calendar's epoch (about -2.9e11 years) wrap around
/// by 2^64, so i64::MIN reads as 292277026596-12-04 15:30:08.
fn calendar(seconds: f64, field: fn(&Civil) -> f64) -> f64 {
    field(&civil(wrapped_seconds(truncate_to_i64(seconds))))
}

fn truncate_to_i64(v: f64) -> i64 {
    // 2^63 is exact as an f64; everything in [-2^63, 2^63) truncates fine.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if !(-LIMIT..LIMIT).contains(&v) {
        i64::MIN
    } else {
        v.trunc() as i64
    }
}

/// Seconds from the Unix epoch to the reference calendar's epoch, March 1 of
/// the year -292277022400; its dates are seconds since then modulo 2^64.
const UNIX_TO_CALENDAR_EPOCH: i128 = 9_223_372_028_741_760_000;

fn wrapped_seconds(unix_seconds: i64) -> i128 {
    let s = i128::from(unix_seconds);
    if s + UNIX_TO_CALENDAR_EPOCH < 0 {
        s + (1i128 << 64)
    } else {
        s
    }
}

/// The proleptic Gregorian date of a Unix time.
fn civil(unix_seconds: i128) -> Civil {
    let days = unix_seconds.div_euclid(86_400);
    let second_of_day = unix_seconds.rem_euclid(86_400);
    // Days since 0000-03-01, counted in 400-year eras of 146097 days, so
    // that leap days fall at the end of each computed year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_march_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_march_year + 2) / 153;
    let day = (day_of_march_year - (153 * march_month + 2) / 5 + 1) as u32;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i128::from(month <= 2);
    let day_of_year =
        CUMULATIVE_DAYS[month as usize - 1] + day + u32::from(month > 2 && is_leap(year));
    Civil {
        year,
        month,
        day,
        hour: (second_of_day / 3600) as u32,
        minute: (second_of_day % 3600 / 60) as u32,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7) as u32,
        day_of_year,
    }
}

/// Days before the first of each month in a common year.
const CUMULATIVE_DAYS: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];

fn is_leap(year: i128) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i128, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAN: f64 = f64::NAN;
    const INF: f64 = f64::INFINITY;

    fn check(name: &str, v: f64, args: &[f64], want: f64) {
        let f = lookup(name).expect("function exists");
        let got = f(v, args);
        let ok = (got.is_nan() && want.is_nan())
            || (got == want && got.is_sign_negative() == want.is_sign_negative());
        assert!(ok, "{name}({v}, {args:?}) = {got}, want {want}");
    }

    #[test]
    fn math() {
        check("abs", -2.5, &[], 2.5);
        check("abs", -INF, &[], INF);
        check("abs", NAN, &[], NAN);
        check("ceil", 1.1, &[], 2.0);
        check("ceil", -1.1, &[], -1.0);
        check("floor", -1.1, &[], -2.0);
        check("exp", 0.0, &[], 1.0);
        check("exp", -INF, &[], 0.0);
        check("exp", 1000.0, &[], INF);
        check("ln", 1.0, &[], 0.0);
        check("ln", 0.0, &[], -INF);
        check("ln", -1.0, &[], NAN);
        check("log2", 8.0, &[], 3.0);
        check("log2", 0.5, &[], -1.0);
        check("log2", 0.0, &[], -INF);
        check("log2", INF, &[], INF);
        check("log2", -2.0, &[], NAN);
        check("log2", f64::from_bits(1), &[], -1074.0);
        check("log10", 1.0, &[], 0.0);
        check("log10", 0.0, &[], -INF);
        check("log10", -1.0, &[], NAN);
        check("sqrt", 16.0, &[], 4.0);
        check("sqrt", -1.0, &[], NAN);
        check("sqrt", INF, &[], INF);
        check("sgn", -50.0, &[], -1.0);
        check("sgn", 100.0, &[], 1.0);
        check("sgn", -INF, &[], -1.0);
        check("sgn", INF, &[], 1.0);
        check("sgn", 0.0, &[], 0.0);
        check("sgn", -0.0, &[], -0.0);
        check("sgn", NAN, &[], NAN);
    }

    #[test]
    fn logarithms_are_close_to_exact() {
        let log2 = lookup("log2").expect("log2");
        let log10 = lookup("log10").expect("log10");
        for v in [3.0, 10.0, 1000.0, 1e-300, 7.5e200, 0.1] {
            let (got2, got10) = (log2(v, &[]), log10(v, &[]));
            assert!(
                (got2 - v.log2()).abs() <= 4.0 * f64::EPSILON * v.log2().abs(),
                "log2({v}) = {got2}"
            );
            assert!(
                (got10 - v.log10()).abs() <= 4.0 * f64::EPSILON * v.log10().abs(),
                "log10({v}) = {got10}"
            );
        }
    }

    #[test]
    fn rounding() {
        check("round", 2.5, &[], 3.0);
        check("round", -2.5, &[], -2.0);
        check("round", 2.4, &[], 2.0);
        check("round", -2.6, &[], -3.0);
        check("round", 0.35, &[0.1], 0.4);
        check("round", 0.3, &[0.1], 0.3);
        check("round", 1234.0, &[100.0], 1200.0);
        check("round", 1250.0, &[100.0], 1300.0);
        check("round", 5.0, &[10.0], 10.0);
        check("round", NAN, &[], NAN);
        check("round", INF, &[], INF);
        check("round", 3.0, &[0.0], NAN);
        check("round", 3.0, &[NAN], NAN);
    }

    #[test]
    fn clamping() {
        check("clamp_max", -50.0, &[75.0], -50.0);
        check("clamp_max", 100.0, &[75.0], 75.0);
        check("clamp_min", -50.0, &[-25.0], -25.0);
        check("clamp_min", 100.0, &[-25.0], 100.0);
        check("clamp", -50.0, &[-25.0, 75.0], -25.0);
        check("clamp", 0.0, &[-25.0, 75.0], 0.0);
        check("clamp", 100.0, &[-25.0, 75.0], 75.0);
        check("clamp", 1.0, &[0.0, NAN], NAN);
        check("clamp", 1.0, &[NAN, 0.0], NAN);
        check("clamp", NAN, &[0.0, 1.0], NAN);
        check("clamp_min", NAN, &[0.0], NAN);
        check("clamp_max", NAN, &[INF], NAN);
        check("clamp_min", NAN, &[INF], INF);
        check("clamp_min", NAN, &[-INF], NAN);
        check("clamp_max", NAN, &[-INF], -INF);
        check("clamp_min", -0.0, &[0.0], 0.0);
        check("clamp_max", 0.0, &[-0.0], -0.0);
        check("clamp_min", 1.0, &[], NAN);
        fn check_output(name: &str, args: &[f64], want: bool) {
            assert_eq!(produces_output(name, args), want, "{name}({args:?})");
        }
        check_output("clamp", &[5.0, -5.0], false);
        check_output("clamp", &[-5.0, 5.0], true);
        check_output("clamp", &[5.0, 5.0], true);
        check_output("clamp", &[NAN, 0.0], true);
        check_output("clamp", &[0.0, NAN], true);
        check_output("clamp_min", &[5.0], true);
        check_output("abs", &[], true);
    }

    /// Values from Prometheus' trig_functions test data; the last bit may
    /// differ between math libraries.
    #[test]
    fn trigonometry() {
        fn check(name: &str, v: f64, args: &[f64], want: f64) {
            let got = lookup(name).expect("function exists")(v, args);
            let ok = (got.is_nan() && want.is_nan())
                || (got - want).abs() <= 2.0 * f64::EPSILON * want.abs();
            assert!(ok, "{name}({v}) = {got}, want {want}");
        }
        check("sin", 10.0, &[], -0.5440211108893699);
        check("cos", 20.0, &[], 0.40808206181339196);
        check("tan", 10.0, &[], 0.6483608274590867);
        check("asin", 10.0 - 10.1, &[], -0.10016742116155944);
        check("asin", 20.0 - 10.1, &[], NAN);
        check("acos", 10.0 - 10.1, &[], 1.670963747956456);
        check("atan", 20.0, &[], 1.5208379310729538);
        check("sinh", 10.0, &[], 11013.232874703393); // the reference data has cosh(10) here, within its 1e-6 tolerance
        check("cosh", 10.0, &[], 11013.232920103324);
        check("cosh", 20.0, &[], 2.4258259770489514e8);
        check("tanh", 20.0, &[], 1.0);
        check("asinh", 10.0, &[], 2.99822295029797);
        check("acosh", 20.0, &[], 3.6882538673612966);
        check("atanh", 10.0 - 10.1, &[], -0.10033534773107522);
        check("rad", 10.0, &[], 0.17453292519943295);
        check("rad", 0.0, &[], 0.0);
        check("deg", std::f64::consts::PI, &[], 180.0);
        check("deg", 0.17453292519943295, &[], 10.0);
        for name in [
            "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh",
            "atanh", "rad", "deg",
        ] {
            check(name, NAN, &[], NAN);
        }
    }

    #[test]
    fn calendar_table() {
        // 2006-01-02 22:04:05 UTC, a Monday.
        let t = 1_136_239_445.0;
        check("year", t, &[], 2006.0);
        check("month", t, &[], 1.0);
        check("day_of_month", t, &[], 2.0);
        check("day_of_year", t, &[], 2.0);
        check("day_of_week", t, &[], 1.0);
        check("hour", t, &[], 22.0);
        check("minute", t, &[], 4.0);
        check("days_in_month", t, &[], 31.0);
        // The epoch, a Thursday; fractions are truncated.
        check("year", 0.0, &[], 1970.0);
        check("day_of_week", 0.9, &[], 4.0);
        check("year", 1_230_767_999.0, &[], 2008.0);
        check("year", 1_230_768_000.0, &[], 2009.0);
        check("day_of_month", 1_456_790_399.0, &[], 29.0);
        check("month", 1_456_790_400.0, &[], 3.0);
        check("day_of_year", 1_483_191_420.0, &[], 366.0);
        check("day_of_year", 1_672_493_820.0, &[], 365.0);
        check("days_in_month", 1_454_284_800.0, &[], 29.0);
        check("days_in_month", 1_485_907_200.0, &[], 28.0);
        check("days_in_month", 951_782_400.0, &[], 29.0); // 2000-02-29
        check("days_in_month", 4_105_123_200.0, &[], 28.0); // 2100-02 (no leap)
        check("days_in_month", 1_700_000_000.0, &[], 30.0); // 2023-11
        // Before the epoch: -1 is 1969-12-31 23:59:59, a Wednesday;
        // -0.5 truncates to 0.
        check("year", -1.0, &[], 1969.0);
        check("day_of_year", -1.0, &[], 365.0);
        check("hour", -1.0, &[], 23.0);
        check("minute", -1.0, &[], 59.0);
        check("day_of_week", -1.0, &[], 3.0);
        check("year", -0.5, &[], 1970.0);
        // Out of range, NaN and infinities truncate to i64::MIN, which
        // wraps to 292277026596-12-04 15:30:08, a Sunday (checked against
        // promtool).
        for v in [NAN, INF, -INF, 1e19, -1e19, -9.3e18] {
            check("year", v, &[], 292_277_026_596.0);
            check("month", v, &[], 12.0);
            check("day_of_month", v, &[], 4.0);
            check("day_of_year", v, &[], 339.0);
            check("day_of_week", v, &[], 0.0);
            check("hour", v, &[], 15.0);
            check("minute", v, &[], 30.0);
        }
        // Far from the epoch, checked against promtool: in range but before
        // the calendar's epoch (wraps), just after it, far ahead, and the
        // year before year 1.
        check("year", -9.223_372_036e18, &[], 292_277_026_624.0);
        check("year", -9.2e18, &[], -291_536_392_293.0);
        check("month", -9.2e18, &[], 5.0);
        check("day_of_month", -9.2e18, &[], 3.0);
        check("year", 9.2e18, &[], 291_536_396_232.0);
        check("month", 9.2e18, &[], 8.0);
        check("day_of_month", 9.2e18, &[], 31.0);
        check("year", -62_198_755_200.0, &[], -1.0);
        check("days_in_month", -62_198_755_200.0, &[], 31.0);
    }

    #[test]
    fn lookup_and_arity() {
        assert!(lookup("rate").is_none());
        assert!(lookup("pi").is_none());
        assert_eq!(arg_count("round"), Some((0, 1)));
        assert_eq!(arg_count("clamp"), Some((2, 0)));
        assert_eq!(arg_count("clamp_max"), Some((1, 0)));
        assert_eq!(arg_count("hour"), Some((0, 0)));
        assert_eq!(arg_count("nope"), None);
    }
}
