//! Value section of a block: one of several kinds, chosen per block by size.
//! The kinds and their layouts are drawn in the module doc of `encoding`.

use super::varint::{Reader, put_uvarint, put_varint, uvarint_len, varint_len};
use super::{DecodeError, decimal, stream, xor};
use stream::{Packing, StreamCode, Transform};

pub(super) const CONST_DECIMAL: u8 = 0;
pub(super) const CONST_RAW: u8 = 1;
/// `DECIMAL + stream code` (stream codes 0..=5) for the mantissa stream.
pub(super) const DECIMAL: u8 = 2;
pub(super) const XOR: u8 = DECIMAL + stream::STREAM_CODES;
pub(super) const RAW: u8 = XOR + 1;
pub(super) const KINDS: u8 = RAW + 1;

const MANTISSA_TRANSFORMS: [Transform; 3] =
    [Transform::Delta, Transform::DeltaOfDelta, Transform::Plain];

/// Largest ulp offset a value may have from its decimal; beyond it the
/// value is an exception. Accumulated float sums stay within a few ulps of
/// the decimal they approximate.
const TOLERANCE: i64 = 64;

/// Decimal section flags.
const HAS_DIVISOR: u8 = 1;
const CORRECTIONS_DENSE: u8 = 2;
const CORRECTIONS_SPARSE: u8 = 4;
const HAS_EXCEPTIONS: u8 = 8;

/// Values as `base + divisor * q` mantissas at one exponent, ulp
/// corrections, and the values that have no such form.
struct Decimal {
    exponent: i32,
    /// One per value; an exception repeats the mantissa before it so that
    /// it costs nothing in the delta streams.
    mantissas: Vec<i64>,
    corrections: Vec<i64>,
    /// (index, f64 bits) of values kept verbatim.
    exceptions: Vec<(usize, u64)>,
}

impl Decimal {
    fn exceptions_len(&self) -> usize {
        let mut len = uvarint_len(self.exceptions.len() as u64);
        let mut next = 0usize;
        for &(i, _) in &self.exceptions {
            len += uvarint_len((i - next) as u64) + 8;
            next = i + 1;
        }
        len
    }
}

/// The mantissa and ulp correction of `v` at exponent `e`, if within
/// tolerance.
#[inline]
fn at_exponent(v: f64, e: i32) -> Option<(i64, i64)> {
    let m = decimal::nearest(v, e)?;
    let c = decimal::correction(v, m, e);
    (c.unsigned_abs() <= TOLERANCE as u64).then_some((m, c))
}

/// Decimal form of a block, or None when too few values have one for it to
/// pay (each exception costs 9+ bytes, more than XOR spends on a value).
fn to_decimal(values: &[f64]) -> Option<Decimal> {
    // The block exponent is the finest that any value needs. A value within
    // tolerance at some exponent stays so at every finer one (until its
    // mantissa outgrows 2^53), so the digit search runs only for values
    // that need a finer exponent than those before them.
    let mut exponent: Option<i32> = None;
    let mut missing = 0usize;
    for &v in values {
        if exponent.is_some_and(|e| at_exponent(v, e).is_some()) {
            continue;
        }
        match decimal::approx(v, TOLERANCE) {
            // Zero (or a subnormal within tolerance of it) fits anywhere.
            Some((0, _, _)) => {}
            Some((_, e, _)) => exponent = Some(exponent.map_or(e, |x| x.min(e))),
            None => {
                missing += 1;
                if missing * 4 > values.len() {
                    return None;
                }
            }
        }
    }
    let exponent = exponent.unwrap_or(0);
    let mut mantissas = Vec::with_capacity(values.len());
    let mut corrections = Vec::with_capacity(values.len());
    let mut exceptions = Vec::new();
    let mut prev = 0i64;
    for (i, &v) in values.iter().enumerate() {
        match at_exponent(v, exponent) {
            Some((m, c)) => {
                mantissas.push(m);
                corrections.push(c);
                prev = m;
            }
            None => {
                mantissas.push(prev);
                corrections.push(0);
                exceptions.push((i, v.to_bits()));
            }
        }
    }
    Some(Decimal {
        exponent,
        mantissas,
        corrections,
        exceptions,
    })
}

/// Greatest common divisor of the mantissas' distances from the first, so
/// that byte counts in pages (multiples of 4096) cost 12 bits less each.
fn divisor(mantissas: &[i64]) -> u64 {
    let Some((&first, rest)) = mantissas.split_first() else {
        return 1;
    };
    let mut g = 0u64;
    for &m in rest {
        let d = m.wrapping_sub(first).unsigned_abs();
        g = gcd(g, d);
        if g == 1 {
            break;
        }
    }
    // Mantissas are within 2^53, so distances within 2^54: g fits an i64.
    if g > 1 << 54 { 1 } else { g.max(1) }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Appends the value section and returns its kind.
pub(super) fn encode(values: &[f64], out: &mut Vec<u8>) -> u8 {
    let Some(first) = values.first() else {
        return RAW;
    };
    let first_bits = first.to_bits();
    if values.iter().all(|v| v.to_bits() == first_bits) {
        return match decimal::from_f64(*first) {
            Some((m, e)) => {
                put_varint(out, m);
                put_varint(out, i64::from(e));
                CONST_DECIMAL
            }
            None => {
                out.extend_from_slice(&first_bits.to_le_bytes());
                CONST_RAW
            }
        };
    }
    let raw_len = 8 * values.len();
    let dec = to_decimal(values).map(DecimalPlan::new);
    // XOR only competes where decimals cost more than two bytes a value:
    // measuring it is the slowest part of encoding.
    let xor_len = match &dec {
        Some(plan) if plan.len <= 2 * values.len() => usize::MAX,
        _ => xor::measure(values),
    };
    match dec {
        Some(plan) if plan.len <= xor_len && plan.len <= raw_len => {
            plan.encode(out);
            DECIMAL + plan.code.code()
        }
        _ if xor_len <= raw_len => {
            xor::encode(values, out);
            XOR
        }
        _ => {
            for v in values {
                out.extend_from_slice(&v.to_bits().to_le_bytes());
            }
            RAW
        }
    }
}

/// How a decimal block is written, and its size.
struct DecimalPlan {
    d: Decimal,
    /// Mantissas are `base + divisor * q`; `d.mantissas` holds the q.
    base: i64,
    divisor: u64,
    code: StreamCode,
    corrections: Option<StreamCode>,
    len: usize,
}

impl DecimalPlan {
    fn new(mut d: Decimal) -> DecimalPlan {
        let divisor = divisor(&d.mantissas);
        let base = d.mantissas.first().copied().unwrap_or(0);
        let mut len = 1 + varint_len(i64::from(d.exponent));
        if divisor > 1 {
            len += uvarint_len(divisor) + varint_len(base);
            for m in &mut d.mantissas {
                // Exact: every distance is a multiple of the divisor.
                *m = m.wrapping_sub(base) / divisor as i64;
            }
        }
        let (code, stream_len) = stream::choose(&d.mantissas, &MANTISSA_TRANSFORMS);
        len += stream_len;
        let corrections = d.corrections.iter().any(|&c| c != 0).then(|| {
            let (code, c_len) = stream::choose(&d.corrections, &[Transform::Plain]);
            len += c_len;
            code
        });
        if !d.exceptions.is_empty() {
            len += d.exceptions_len();
        }
        DecimalPlan {
            d,
            base,
            divisor,
            code,
            corrections,
            len,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let mut flags = 0;
        if self.divisor > 1 {
            flags |= HAS_DIVISOR;
        }
        match self.corrections.map(|c| c.packing) {
            Some(Packing::Dense) => flags |= CORRECTIONS_DENSE,
            Some(Packing::Sparse) => flags |= CORRECTIONS_SPARSE,
            None => {}
        }
        if !self.d.exceptions.is_empty() {
            flags |= HAS_EXCEPTIONS;
        }
        out.push(flags);
        put_varint(out, i64::from(self.d.exponent));
        if self.divisor > 1 {
            put_uvarint(out, self.divisor);
            put_varint(out, self.base);
        }
        stream::encode(&self.d.mantissas, self.code, out);
        if let Some(c) = self.corrections {
            stream::encode(&self.d.corrections, c, out);
        }
        if !self.d.exceptions.is_empty() {
            put_uvarint(out, self.d.exceptions.len() as u64);
            let mut next = 0usize;
            for &(i, bits) in &self.d.exceptions {
                put_uvarint(out, (i - next) as u64);
                out.extend_from_slice(&bits.to_le_bytes());
                next = i + 1;
            }
        }
        // The choice between kinds, and MAX_BLOCK_BYTES, rely on this.
        debug_assert_eq!(out.len() - start, self.len, "decimal size estimate");
    }
}

/// Decodes `n` values of `kind`, appending to `values`. `scratch` holds
/// mantissas while they are converted; it is left as it was.
pub(super) fn decode(
    r: &mut Reader<'_>,
    kind: u8,
    n: usize,
    values: &mut Vec<f64>,
    scratch: &mut Vec<i64>,
) -> Result<(), DecodeError> {
    match kind {
        CONST_DECIMAL | CONST_RAW => {
            let v = if kind == CONST_DECIMAL {
                let m = r.varint()?;
                let e = read_exponent(r)?;
                decimal::to_f64(m, e)
            } else {
                f64::from_bits(r.u64_le()?)
            };
            values.resize(values.len() + n, v);
            Ok(())
        }
        XOR => {
            let at = r.pos();
            xor::decode(r.take_rest(), at, n, values)
        }
        RAW => {
            values.reserve(n);
            for _ in 0..n {
                values.push(f64::from_bits(r.u64_le()?));
            }
            Ok(())
        }
        _ => {
            let code = StreamCode::from_code(kind - DECIMAL).ok_or(DecodeError::Malformed {
                at: 0,
                what: "value kind out of range",
            })?;
            decode_decimal(r, code, n, values, scratch)
        }
    }
}

fn read_exponent(r: &mut Reader<'_>) -> Result<i32, DecodeError> {
    let at = r.pos();
    let e = r.varint()?;
    if e.unsigned_abs() > decimal::MAX_EXPONENT as u64 {
        return Err(DecodeError::Malformed {
            at,
            what: "decimal exponent beyond +-22",
        });
    }
    Ok(e as i32)
}

fn decode_decimal(
    r: &mut Reader<'_>,
    code: StreamCode,
    n: usize,
    values: &mut Vec<f64>,
    scratch: &mut Vec<i64>,
) -> Result<(), DecodeError> {
    let flags_at = r.pos();
    let flags = r.u8()?;
    if flags & !(HAS_DIVISOR | CORRECTIONS_DENSE | CORRECTIONS_SPARSE | HAS_EXCEPTIONS) != 0
        || flags & CORRECTIONS_DENSE != 0 && flags & CORRECTIONS_SPARSE != 0
    {
        return Err(DecodeError::Malformed {
            at: flags_at,
            what: "unknown decimal flags",
        });
    }
    let exponent = read_exponent(r)?;
    let (divisor, base) = if flags & HAS_DIVISOR != 0 {
        (r.uvarint()? as i64, r.varint()?)
    } else {
        (1, 0)
    };
    let scratch_base = scratch.len();
    let res = stream::decode(r, n, code, scratch);
    if res.is_ok() {
        let q = &scratch[scratch_base..];
        let p = decimal::scale(exponent);
        // Separate loops keep the branches out of the per-value work so the
        // conversion vectorizes.
        let m = |q: i64| base.wrapping_add(divisor.wrapping_mul(q)) as f64;
        match (divisor, exponent) {
            (1, 0) => values.extend(q.iter().map(|&q| q as f64)),
            (1, e) if e > 0 => values.extend(q.iter().map(|&q| q as f64 * p)),
            (1, _) => values.extend(q.iter().map(|&q| q as f64 / p)),
            (_, 0) => values.extend(q.iter().map(|&q| m(q))),
            (_, e) if e > 0 => values.extend(q.iter().map(|&q| m(q) * p)),
            _ => values.extend(q.iter().map(|&q| m(q) / p)),
        }
    }
    scratch.truncate(scratch_base);
    res?;
    let decoded = values.len() - n;
    let out = &mut values[decoded..];
    let correct = |v: &mut f64, c: i64| {
        *v = f64::from_bits((v.to_bits() as i64).wrapping_add(c) as u64);
    };
    if flags & CORRECTIONS_DENSE != 0 {
        // Through the scratch like the mantissas: the stream decoder reads
        // runs of one-byte varints a word at a time.
        let plain = StreamCode {
            transform: Transform::Plain,
            packing: Packing::Dense,
        };
        let res = stream::decode(r, n, plain, scratch);
        if res.is_ok() {
            for (v, &c) in out.iter_mut().zip(&scratch[scratch_base..]) {
                correct(v, c);
            }
        }
        scratch.truncate(scratch_base);
        res?;
    } else if flags & CORRECTIONS_SPARSE != 0 {
        stream::for_each_sparse(r, n, |i, c| correct(&mut out[i], c))?;
    }
    if flags & HAS_EXCEPTIONS != 0 {
        let count = r.count(n, "more exceptions than samples")?;
        let mut next = 0usize;
        for _ in 0..count {
            let at = r.pos();
            let i = next + r.count(n, "exception index past the sample count")?;
            let bits = r.u64_le()?;
            let slot = out.get_mut(i).ok_or(DecodeError::Malformed {
                at,
                what: "exception index past the sample count",
            })?;
            *slot = f64::from_bits(bits);
            next = i + 1;
        }
    }
    Ok(())
}
