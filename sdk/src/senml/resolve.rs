//! Resolution of a pack into self-contained records (RFC 8428 §4.6).

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

use super::SenmlError;
use super::record::{Field, Record, validate};

/// Times below this (2^28 s) are relative to "now"; from it on they are seconds since the
/// Unix epoch (RFC 8428 §4.5.3).
pub const RELATIVE_TIME_LIMIT: f64 = 268_435_456.0;

/// The value of a resolved record: exactly one of the four SenML value types.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number (`v`), with the base value already added.
    Float(f64),
    /// A string (`vs`).
    String(String),
    /// A boolean (`vb`).
    Bool(bool),
    /// Binary data (`vd`).
    Data(Vec<u8>),
}

impl Value {
    /// The number, if this is a [`Value::Float`].
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(x) => Some(*x),
            _ => None,
        }
    }
}

/// A record with the base fields of its pack applied and its time made absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedRecord {
    /// Base name and name, concatenated; matches `[A-Za-z0-9][-:./_A-Za-z0-9]*`.
    pub name: String,
    /// The record's unit, or else the base unit in force, if any.
    pub unit: Option<String>,
    /// The value, with the base value added to a numeric one. `None` only if `sum` is present.
    pub value: Option<Value>,
    /// Sum plus base sum, if either is present.
    pub sum: Option<f64>,
    /// Absolute time, seconds since the Unix epoch.
    pub time: f64,
    /// Update time, seconds.
    pub update_time: Option<f64>,
}

impl ResolvedRecord {
    /// The record in SenML form, with no base fields and an absolute `t` (for encoding a
    /// resolved pack, as in RFC 8428 §5.1.4).
    pub fn to_record(&self) -> Record {
        let mut r = Record {
            n: Some(self.name.clone()),
            u: self.unit.clone(),
            s: self.sum,
            t: Some(self.time),
            ut: self.update_time,
            ..Record::default()
        };
        match &self.value {
            Some(Value::Float(x)) => r.v = Some(*x),
            Some(Value::String(x)) => r.vs = Some(x.clone()),
            Some(Value::Bool(x)) => r.vb = Some(*x),
            Some(Value::Data(x)) => r.vd = Some(x.clone()),
            None => {}
        }
        r
    }
}

impl From<&ResolvedRecord> for Record {
    fn from(r: &ResolvedRecord) -> Self {
        r.to_record()
    }
}

/// Whether `name` obeys RFC 8428 §4.5.1: only `A–Z a–z 0–9 - : . / _`, starting with a letter
/// or a digit.
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric()) && bytes.all(is_name_byte)
}

/// [`is_valid_name`] of base name `bn` and name `n` joined, without joining them.
pub(crate) fn is_valid_name_parts(bn: &str, n: &str) -> bool {
    let rest_ok = |s: &[u8]| s.iter().all(|&b| is_name_byte(b));
    match bn.as_bytes().split_first() {
        Some((first, rest)) => {
            first.is_ascii_alphanumeric() && rest_ok(rest) && rest_ok(n.as_bytes())
        }
        None => is_valid_name(n),
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b':' | b'.' | b'/' | b'_')
}

/// `base + x` where either may be absent; `None` if both are. Adds only when both are present,
/// so a lone value keeps its exact bits.
pub(crate) fn add(base: Option<f64>, x: Option<f64>) -> Option<f64> {
    match (base, x) {
        (Some(b), Some(x)) => Some(b + x),
        (b, x) => b.or(x),
    }
}

/// Checks that a resolved numeric value and sum (base value or sum added) are finite.
pub(crate) fn check_finite(
    index: usize,
    value: Option<f64>,
    sum: Option<f64>,
) -> Result<(), SenmlError> {
    for (x, field) in [(value, Field::V), (sum, Field::S)] {
        if x.is_some_and(|x| !x.is_finite()) {
            return Err(SenmlError::Overflow {
                record: index,
                field: field.label(),
            });
        }
    }
    Ok(())
}

/// A record's absolute time: base time plus time, plus `now` if that is below 2^28
/// (RFC 8428 §4.5.3); an error if the sum is not finite.
pub(crate) fn absolute_time(
    index: usize,
    bt: Option<f64>,
    t: Option<f64>,
    now: f64,
) -> Result<f64, SenmlError> {
    let mut time = add(bt, t).unwrap_or(0.0);
    if time < RELATIVE_TIME_LIMIT {
        time += now;
    }
    if !time.is_finite() {
        return Err(SenmlError::Overflow {
            record: index,
            field: Field::T.label(),
        });
    }
    Ok(time)
}

/// The base fields in force at some point of the pack.
#[derive(Default)]
struct Base<'a> {
    bn: Option<&'a str>,
    bt: Option<f64>,
    bu: Option<&'a str>,
    bv: Option<f64>,
    bs: Option<f64>,
}

/// Resolves a pack (RFC 8428 §4.6): applies base name, time, unit, value and sum to every
/// record, makes times absolute and sorts the records by time.
///
/// `now` is the current time in seconds since the Unix epoch; times below 2^28 (after adding
/// the base time) are taken relative to it. It is an argument so that resolution stays pure.
///
/// - A numeric value is `bv + v`; a record with no value field but a base value in force gets
///   the base value (§4.5.4).
/// - A record that carries base fields only (no regular field at all, as the first record of
///   the §5.1.7 example) yields no resolved record.
/// - Every other record must end up with a value or a sum, and a name that obeys §4.5.1.
/// - The result is stably sorted by time ("records need to be in chronological order").
///
/// The version is checked (by [`validate`](super::validate)) but not carried: resolved records
/// of a version-10 pack have none.
pub fn resolve(pack: &[Record], now: f64) -> Result<Vec<ResolvedRecord>, SenmlError> {
    if !now.is_finite() {
        return Err(SenmlError::InvalidNow);
    }
    validate(pack)?;
    let mut base = Base::default();
    let mut out = Vec::with_capacity(pack.len());
    for (index, r) in pack.iter().enumerate() {
        if let Some(bn) = &r.bn {
            base.bn = Some(bn);
        }
        if let Some(bu) = &r.bu {
            base.bu = Some(bu);
        }
        base.bt = r.bt.or(base.bt);
        base.bv = r.bv.or(base.bv);
        base.bs = r.bs.or(base.bs);

        let value = if let Some(v) = r.v {
            Some(Value::Float(base.bv.map_or(v, |bv| bv + v)))
        } else if let Some(vs) = &r.vs {
            Some(Value::String(vs.clone()))
        } else if let Some(vb) = r.vb {
            Some(Value::Bool(vb))
        } else if let Some(vd) = &r.vd {
            Some(Value::Data(vd.clone()))
        } else {
            base.bv.map(Value::Float)
        };
        let sum = add(base.bs, r.s);
        if value.is_none() && sum.is_none() {
            if r.has_regular_fields() {
                return Err(SenmlError::MissingValue { record: index });
            }
            continue;
        }
        check_finite(index, value.as_ref().and_then(Value::as_f64), sum)?;

        let name = [base.bn.unwrap_or(""), r.n.as_deref().unwrap_or("")].concat();
        if name.is_empty() {
            return Err(SenmlError::MissingName { record: index });
        }
        if !is_valid_name(&name) {
            return Err(SenmlError::InvalidName {
                record: index,
                name,
            });
        }

        let time = absolute_time(index, base.bt, r.t, now)?;

        out.push(ResolvedRecord {
            name,
            unit: r.u.as_deref().or(base.bu).map(str::to_owned),
            value,
            sum,
            time,
            update_time: r.ut,
        });
    }
    out.sort_by(|a, b| a.time.total_cmp(&b.time));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checking base name and name apart is checking them joined.
    #[test]
    fn name_parts_are_checked_as_one_name() {
        let parts = [
            "",
            "a",
            "-",
            "a-",
            "-a",
            "9:",
            "é",
            " ",
            "a b",
            "_x",
            "urn:dev:1:",
        ];
        for bn in parts {
            for n in parts {
                let joined = [bn, n].concat();
                assert_eq!(
                    is_valid_name_parts(bn, n),
                    is_valid_name(&joined),
                    "{bn:?} + {n:?}"
                );
            }
        }
    }
}
