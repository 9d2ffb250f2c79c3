//! A device's credentials from the provisioning CSV (feature `std`): the file the platform
//! vendor gives the device maker — the same format `v6iot-edge devices import` and
//! `v6iot-sim provision` use (`id,kid_hex,secret_hex,salt_hex,class,prefixes`, one device per
//! line, `#` comments) — read for one device, and turned into its side of the OSCORE context.
//!
//! The device's Sender ID is its kid, its Recipient ID the edge's Sender ID (empty); no ID
//! Context; the master salt is empty when the column is.

use std::path::Path;
use std::string::{String, ToString};
use std::vec::Vec;

use v6iot_credentials::csv::{self, CsvError};
use v6iot_sdk::oscore::{ContextConfig, ContextInput, DurableState, OscoreError, SecurityContext};

/// The header line of the credentials CSV.
pub use v6iot_credentials::csv::HEADER;

/// Why the credentials could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The first line that is not blank or a comment is not the header.
    #[error("the header must be `{HEADER}`")]
    Header,
    /// A device line is refused (six fields, hex, class, prefixes, the record's limits).
    #[error("line {line}: {source}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        #[source]
        source: CsvError,
    },
    /// No line names the device.
    #[error("no device `{0}` in the credentials file")]
    NoDevice(String),
    /// The secret or IDs do not make an OSCORE context.
    #[error("the credentials do not make an OSCORE context: {0}")]
    Context(#[from] OscoreError),
}

/// One device's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCredentials {
    /// The endpoint name (`ep`), the device's identity at the edge.
    pub id: String,
    /// The OSCORE kid (the device's Sender ID).
    pub kid: Vec<u8>,
    /// The master secret.
    pub secret: Vec<u8>,
    /// The master salt (empty for none).
    pub salt: Vec<u8>,
}

impl DeviceCredentials {
    /// Reads the line of device `id` from the CSV at `path`.
    pub fn load(path: &Path, id: &str) -> Result<DeviceCredentials, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        DeviceCredentials::find(&text, id)
    }

    /// Finds device `id` in the CSV `text`, read line by line with the reader the edge's
    /// import uses (`v6iot_credentials::csv`): a file the edge refuses is refused here too.
    pub fn find(text: &str, id: &str) -> Result<DeviceCredentials, CredentialsError> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !csv::is_skipped(l));
        let header = lines.next().map_or("", |(_, l)| l);
        csv::check_header(header).map_err(|_| CredentialsError::Header)?;
        for (n, line) in lines {
            let record = csv::parse_line(line).map_err(|source| CredentialsError::Line {
                line: n + 1,
                source,
            })?;
            if record.id == id {
                return Ok(DeviceCredentials {
                    kid: record.kid,
                    secret: record.master_secret.as_bytes().to_vec(),
                    salt: record.master_salt.unwrap_or_default(),
                    id: record.id,
                });
            }
        }
        Err(CredentialsError::NoDevice(id.to_string()))
    }

    /// The device's side of the OSCORE context, continuing from `stored` (the sender mark and
    /// replay floor its state file holds; all zero for a fresh device).
    pub fn context(&self, stored: DurableState) -> Result<SecurityContext, CredentialsError> {
        let input = ContextInput {
            master_secret: self.secret.clone(),
            master_salt: self.salt.clone(),
            id_context: None,
            sender_id: self.kid.clone(),
            recipient_id: Vec::new(),
        };
        Ok(SecurityContext::restore_state(
            &input,
            ContextConfig::default(),
            stored,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "# demo\nid,kid_hex,secret_hex,salt_hex,class,prefixes\n\
        a,01,000102030405060708090a0b0c0d0e0f,,1,\n\
        sensor-1,2a,0f0e0d0c0b0a09080706050403020100,a1b2,1,::1/128\n";

    #[test]
    fn the_device_line_is_found_and_makes_a_context() {
        let c = DeviceCredentials::find(CSV, "sensor-1").unwrap();
        assert_eq!(
            (c.kid.as_slice(), c.salt.as_slice()),
            (&[0x2a][..], &[0xa1, 0xb2][..])
        );
        let ctx = c.context(DurableState::default()).unwrap();
        assert_eq!(ctx.sender_id(), &[0x2a]);
        assert!(matches!(
            DeviceCredentials::find(CSV, "b"),
            Err(CredentialsError::NoDevice(_))
        ));
        assert!(matches!(
            DeviceCredentials::find("id,kid\n", "a"),
            Err(CredentialsError::Header)
        ));
        let bad = CSV.replace("0f0e", "0g0e");
        assert!(matches!(
            DeviceCredentials::find(&bad, "sensor-1"),
            Err(CredentialsError::Line { line: 4, .. })
        ));
        // another device's line the edge's import would refuse (class `one`) is refused here too
        let other = CSV.replace(",,1,\n", ",,one,\n");
        assert!(matches!(
            DeviceCredentials::find(&other, "sensor-1"),
            Err(CredentialsError::Line {
                line: 3,
                source: CsvError::Class(_)
            })
        ));
    }

    #[test]
    fn the_demo_file_the_examples_ship_is_read() {
        let demo = include_str!("../credentials/demo.csv");
        let c = DeviceCredentials::find(demo, "sensor-1").unwrap();
        assert_eq!((c.kid.as_slice(), c.secret.len()), (&[0x51][..], 16));
        assert!(c.salt.is_empty());
    }
}
