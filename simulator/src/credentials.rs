//! OSCORE credentials of simulated devices: the credentials CSV (`v6iot-sim provision`'s
//! output, parsed with `v6iot_credentials::csv`, the reader the edge's import uses) turned into security contexts
//! with the wire conventions both sides use.
//!
//! One context per device: Master Secret and Master Salt from its row (no salt when the column
//! is empty), no ID Context, AES-CCM-16-64-128 and HKDF-SHA-256; device Sender ID = the row's
//! kid, device Recipient ID = the edge's Sender ID = the empty string.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use anyhow::Context as _;
use v6iot_credentials::{DeviceRecord, csv};
use v6iot_sdk::oscore::{ContextConfig, ContextInput, DurableState, SecurityContext};

/// The devices of a credentials CSV, by id.
#[derive(Debug)]
pub struct Credentials {
    by_id: HashMap<String, DeviceRecord>,
}

impl Credentials {
    /// Reads and checks the CSV at `path`; errors name the file and line.
    pub fn load(path: &Path) -> anyhow::Result<Credentials> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open the credentials CSV {}", path.display()))?;
        Credentials::read(std::io::BufReader::new(file))
            .with_context(|| format!("credentials CSV {}", path.display()))
    }

    /// Reads a credentials CSV.
    pub fn read(reader: impl BufRead) -> anyhow::Result<Credentials> {
        let mut by_id = HashMap::new();
        for_each_record(reader, |n, record| {
            if by_id.contains_key(&record.id) {
                anyhow::bail!("line {n}: device `{}` appears twice", record.id);
            }
            by_id.insert(record.id.clone(), record);
            Ok(())
        })?;
        Ok(Credentials { by_id })
    }

    /// The row of device `id`.
    pub fn get(&self, id: &str) -> Option<&DeviceRecord> {
        self.by_id.get(id)
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when the file lists no device.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Reads a credentials CSV row by row, handing `f` each row with its line number (errors name
/// the line): for fleets too large to hold every row at once.
pub fn for_each_record(
    reader: impl BufRead,
    mut f: impl FnMut(usize, DeviceRecord) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut header_seen = false;
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if csv::is_skipped(&line) {
            continue;
        }
        let n = i + 1;
        if !header_seen {
            csv::check_header(&line).map_err(|e| anyhow::anyhow!("line {n}: {e}"))?;
            header_seen = true;
            continue;
        }
        let record = csv::parse_line(&line).map_err(|e| anyhow::anyhow!("line {n}: {e}"))?;
        f(n, record)?;
    }
    anyhow::ensure!(header_seen, "no header line ({})", csv::HEADER);
    Ok(())
}

/// The device side's context input for `record`.
pub fn device_input(record: &DeviceRecord) -> ContextInput {
    ContextInput {
        master_secret: record.master_secret.as_bytes().to_vec(),
        master_salt: record.master_salt.clone().unwrap_or_default(),
        id_context: None,
        sender_id: record.kid.clone(),
        recipient_id: Vec::new(),
    }
}

/// The edge's side of `record`'s context (Sender ID empty, Recipient ID the kid): the stand-in
/// edge's, and the probe's, which speaks to a device as the edge would.
pub fn edge_input(record: &DeviceRecord) -> ContextInput {
    let mut input = device_input(record);
    std::mem::swap(&mut input.sender_id, &mut input.recipient_id);
    input
}

/// The device's security context after a restart: its sender sequence number continues at
/// `stored.sender_mark` (0 for a device that never ran), with marks `step` apart, and requests
/// below `stored.replay_floor` are replays.
pub fn device_context(
    record: &DeviceRecord,
    stored: DurableState,
    step: u64,
) -> anyhow::Result<SecurityContext> {
    let config = ContextConfig {
        persist_step: step,
        ..ContextConfig::default()
    };
    SecurityContext::restore_state(&device_input(record), config, stored).map_err(|e| {
        anyhow::anyhow!(
            "device `{}`: cannot build its OSCORE context: {e}",
            record.id
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_rows_and_builds_contexts() {
        let text = format!(
            "# comment\n{}\nsim000000,00,8f1c0e5b2a7d4c3e9b6a1f0e2d3c4b5a,,1,2001:db8:1200:305::/64\n\
             sim000001,01,0a1b2c3d4e5f60718293a4b5c6d7e8f9,a1b2c3d4,1,\n",
            csv::HEADER
        );
        let creds = Credentials::read(text.as_bytes()).unwrap();
        assert_eq!(creds.len(), 2);
        let one = creds.get("sim000001").unwrap();
        let input = device_input(one);
        assert_eq!(input.sender_id, vec![1]);
        assert!(input.recipient_id.is_empty());
        assert_eq!(input.master_salt, vec![0xa1, 0xb2, 0xc3, 0xd4]);
        assert!(
            device_input(creds.get("sim000000").unwrap())
                .master_salt
                .is_empty()
        );
        let stored = DurableState {
            sender_mark: 512,
            replay_floor: 9,
        };
        let ctx = device_context(one, stored, 256).unwrap();
        assert_eq!(ctx.sequence().peek(), 512);
        assert_eq!(ctx.replay_window().floor(), 9);
    }

    #[test]
    fn errors_name_the_line() {
        let text = format!("{}\nsim000000,zz,00,,1,\n", csv::HEADER);
        let e = Credentials::read(text.as_bytes()).unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
        let dup = format!(
            "{}\nsim000000,00,8f1c0e5b2a7d4c3e9b6a1f0e2d3c4b5a,,1,\nsim000000,01,8f1c0e5b2a7d4c3e9b6a1f0e2d3c4b5a,,1,\n",
            csv::HEADER
        );
        assert!(Credentials::read(dup.as_bytes()).is_err());
    }
}
