//! The credentials CSV: what `v6iot-sim provision` writes and `v6iot-edge devices import` reads.
//!
//! ```text
//! id,kid_hex,secret_hex,salt_hex,class,prefixes
//! sim000000,00,8f1c0e5b2a7d4c3e9b6a1f0e2d3c4b5a,,1,2001:db8:1200:305::/64
//! sim000001,01,0a1b2c3d4e5f60718293a4b5c6d7e8f9,a1b2c3d4,1,2001:db8:1200:305::/64 2001:db8:1200:306::/64
//! ```
//!
//! - The first line that is not blank or a comment is the header, exactly as above.
//! - Then one device per line, six comma-separated fields, no quoting (no field can hold a
//!   comma): `id` (the endpoint name), `kid_hex` (1–7 bytes), `secret_hex` (16–32 bytes),
//!   `salt_hex` (empty for none, at most 32 bytes), `class` (1–255), `prefixes` (IPv6 prefixes
//!   separated by spaces; may be empty).
//! - Hex is either case. Spaces around fields are ignored. Lines may end in CRLF.
//! - Blank lines and lines starting with `#` are skipped. Devices start out `active`.

use crate::{
    DeviceRecord, DeviceState, InvalidRecord, Ipv6Prefix, MasterSecret, PrefixError, check_id,
};

/// The header line.
pub const HEADER: &str = "id,kid_hex,secret_hex,salt_hex,class,prefixes";

/// Why a CSV line is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CsvError {
    /// The header line is not [`HEADER`].
    #[error("the header must be `{HEADER}`")]
    Header,
    /// Not six fields (how many).
    #[error("{0} fields, expected 6 ({HEADER})")]
    FieldCount(usize),
    /// The id is not a valid device id.
    #[error(transparent)]
    Id(InvalidRecord),
    /// A `*_hex` field is not hex.
    #[error("{field}: {source}")]
    Hex {
        /// `kid_hex`, `secret_hex` or `salt_hex`.
        field: &'static str,
        /// What is wrong with it.
        source: hex::FromHexError,
    },
    /// The class is not a number 1..=255 (the text).
    #[error("class: `{0}` is not a number 1..=255")]
    Class(String),
    /// A prefix does not parse.
    #[error("prefixes: {0}")]
    Prefix(PrefixError),
    /// The fields parse but break a limit of [`DeviceRecord::check`].
    #[error("device `{device}`: {reason}")]
    Record {
        /// The device id.
        device: String,
        /// The limit broken.
        reason: InvalidRecord,
    },
}

/// Whether a line is blank or a comment.
#[must_use]
pub fn is_skipped(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// Checks the header line.
///
/// # Errors
///
/// [`CsvError::Header`] (its message quotes the expected header).
pub fn check_header(line: &str) -> Result<(), CsvError> {
    let fields: Vec<&str> = line
        .trim_start_matches('\u{feff}')
        .split(',')
        .map(str::trim)
        .collect();
    if fields.join(",") == HEADER {
        Ok(())
    } else {
        Err(CsvError::Header)
    }
}

/// Parses one device line.
///
/// # Errors
///
/// The [`CsvError`] of the first field that is wrong.
pub fn parse_line(line: &str) -> Result<DeviceRecord, CsvError> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [id, kid, secret, salt, class, prefixes] = fields.as_slice() else {
        return Err(CsvError::FieldCount(fields.len()));
    };
    check_id(id).map_err(CsvError::Id)?;
    let hex_field =
        |field, text: &str| hex::decode(text).map_err(|source| CsvError::Hex { field, source });
    let kid = hex_field("kid_hex", kid)?;
    let secret = MasterSecret::new(hex_field("secret_hex", secret)?);
    let salt = match *salt {
        "" => None,
        s => Some(hex_field("salt_hex", s)?),
    };
    let class: u8 = class
        .parse()
        .map_err(|_| CsvError::Class((*class).to_owned()))?;
    let prefixes = prefixes
        .split_ascii_whitespace()
        .map(|p| p.parse::<Ipv6Prefix>().map_err(CsvError::Prefix))
        .collect::<Result<Vec<_>, _>>()?;
    let record = DeviceRecord {
        id: (*id).to_owned(),
        kid,
        master_secret: secret,
        master_salt: salt,
        class,
        prefixes,
        state: DeviceState::Active,
    };
    record.check().map_err(|reason| CsvError::Record {
        device: record.id.clone(),
        reason,
    })?;
    Ok(record)
}

/// Writes one device line (without the newline) in the format [`parse_line`] reads.
#[must_use]
pub fn format_line(record: &DeviceRecord) -> String {
    let prefixes: Vec<String> = record.prefixes.iter().map(ToString::to_string).collect();
    format!(
        "{},{},{},{},{},{}",
        record.id,
        hex::encode(&record.kid),
        record.master_secret.to_hex().as_str(),
        record
            .master_salt
            .as_deref()
            .map(hex::encode)
            .unwrap_or_default(),
        record.class,
        prefixes.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("csv.rs");
        let lines: Vec<&str> = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```text"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//! "))
            .collect();
        check_header(lines[0]).unwrap();
        let a = parse_line(lines[1]).unwrap();
        assert_eq!(a.id, "sim000000");
        assert_eq!(a.kid, vec![0]);
        assert_eq!(a.master_salt, None);
        let b = parse_line(lines[2]).unwrap();
        assert_eq!(b.master_salt, Some(vec![0xa1, 0xb2, 0xc3, 0xd4]));
        assert_eq!(b.prefixes.len(), 2);
        assert_eq!(format_line(&b), lines[2]);
    }

    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../../README.md");
        let lines: Vec<&str> = readme
            .lines()
            .skip_while(|l| *l != HEADER)
            .take_while(|l| !l.starts_with("```"))
            .collect();
        assert_eq!(lines.len(), 3, "README.md shows the header and two devices");
        check_header(lines[0]).unwrap();
        for line in &lines[1..] {
            parse_line(line).unwrap();
        }
    }

    #[test]
    fn bad_lines_name_the_field() {
        let ok = "d1,0a,000102030405060708090a0b0c0d0e0f,,1,2001:db8::/64";
        parse_line(ok).unwrap();
        for (line, needle) in [
            ("d1,0a,00", "fields"),
            ("d1,0g,000102030405060708090a0b0c0d0e0f,,1,", "kid_hex"),
            ("d1,,000102030405060708090a0b0c0d0e0f,,1,", "kid must be"),
            (
                "d1,0a0b0c0d0e0f1011,000102030405060708090a0b0c0d0e0f,,1,",
                "kid must be",
            ),
            ("d1,0a,0001,,1,", "master secret must be"),
            ("d1,0a,000102030405060708090a0b0c0d0e0f,0,1,", "salt_hex"),
            ("d1,0a,000102030405060708090a0b0c0d0e0f,,0,", "class 0"),
            ("d1,0a,000102030405060708090a0b0c0d0e0f,,256,", "class"),
            (
                "d1,0a,000102030405060708090a0b0c0d0e0f,,1,2001:db8::1/64",
                "prefixes",
            ),
            ("_d,0a,000102030405060708090a0b0c0d0e0f,,1,", "device id"),
            (",0a,000102030405060708090a0b0c0d0e0f,,1,", "device id"),
        ] {
            let e = parse_line(line).unwrap_err().to_string();
            assert!(e.contains(needle), "{line}: {e}");
        }
        // the variants, for callers that match on them
        let with = |fields: &str| parse_line(&format!("d1,{fields}")).unwrap_err();
        assert!(matches!(
            with("0g,000102030405060708090a0b0c0d0e0f,,1,"),
            CsvError::Hex {
                field: "kid_hex",
                source: hex::FromHexError::InvalidHexCharacter { c: 'g', index: 1 }
            }
        ));
        assert!(matches!(
            with("0a,000102030405060708090a0b0c0d0e0f,abc,1,"),
            CsvError::Hex {
                field: "salt_hex",
                source: hex::FromHexError::OddLength
            }
        ));
        assert_eq!(
            with("0a,0001,,1,"),
            CsvError::Record {
                device: "d1".into(),
                reason: InvalidRecord::SecretLength(2)
            }
        );
        assert_eq!(
            with("0a,000102030405060708090a0b0c0d0e0f,,x,"),
            CsvError::Class("x".into())
        );
        assert_eq!(
            parse_line("d/1,0a,000102030405060708090a0b0c0d0e0f,,1,"),
            Err(CsvError::Id(InvalidRecord::IdCharacters("d/1".into())))
        );
        assert_eq!(parse_line("a,b"), Err(CsvError::FieldCount(2)));
        assert_eq!(check_header("id,kid,secret"), Err(CsvError::Header));
        check_header(" id, kid_hex ,secret_hex,salt_hex,class,prefixes").unwrap();
        assert!(is_skipped("  # comment"));
        assert!(is_skipped("   "));
    }
}
