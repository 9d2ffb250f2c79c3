//! `v6iot-sim provision`: fresh OSCORE credentials for a simulated fleet, as the credentials CSV
//! that `v6iot-edge devices import` reads (the format is documented in the
//! `v6iot-credentials` crate's `csv` and in README.md); with the `demo` feature also imported
//! into an edge router's registry (`provision_edge`).
//!
//! Device `n` (from `first`) is `{id_prefix}{n:06}`, the name `v6iot-sim run` gives it; its kid
//! is `n` as a minimal big-endian number (`00`, `01`, … `ff`, `0100`, …), unique per serial; its
//! master secret is 16 random bytes from the operating system; no salt.

use std::io::Write;
#[cfg(feature = "demo")]
use std::path::Path;

#[cfg(feature = "demo")]
use anyhow::Context as _;
use v6iot_credentials::{DeviceRecord, DeviceState, Ipv6Prefix, MAX_KID_LEN, MasterSecret, csv};
#[cfg(feature = "demo")]
use v6iot_edge_router::{
    config::EdgeConfig,
    registry_db::{Registry, SealKey},
};

#[cfg(feature = "demo")]
use crate::scenario::OscoreSpec;

/// What to generate.
#[derive(Debug, Clone)]
pub struct ProvisionPlan {
    /// Number of devices.
    pub devices: u64,
    /// Serial of the first device.
    pub first: u64,
    /// Device id prefix.
    pub id_prefix: String,
    /// Address plan class of every device.
    pub class: u8,
    /// The prefix every device may use.
    pub prefix: Ipv6Prefix,
}

/// The kid of serial `n`: its big-endian bytes without leading zeros (one byte for 0).
pub fn kid_of(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    bytes.iter().skip(skip).copied().collect()
}

/// Writes the header and one line per device; returns the number of devices written.
pub fn write_csv(plan: &ProvisionPlan, mut out: impl Write) -> anyhow::Result<u64> {
    let last = plan
        .first
        .checked_add(plan.devices)
        .filter(|end| kid_of(end.saturating_sub(1)).len() <= MAX_KID_LEN)
        .ok_or_else(|| {
            anyhow::anyhow!("serials beyond 2^56 do not fit a {MAX_KID_LEN}-byte kid")
        })?;
    writeln!(out, "{}", csv::HEADER)?;
    for n in plan.first..last {
        let record = DeviceRecord {
            id: format!("{}{n:06}", plan.id_prefix),
            kid: kid_of(n),
            master_secret: MasterSecret::random(16)?,
            master_salt: None,
            class: plan.class,
            prefixes: vec![plan.prefix],
            state: DeviceState::Active,
        };
        record
            .check()
            .map_err(|e| anyhow::anyhow!("device {}: {e}", record.id))?;
        writeln!(out, "{}", csv::format_line(&record))?;
    }
    out.flush()?;
    Ok(plan.devices)
}

/// Provisions the fleet of `plan`, imports it into the registry of an edge router whose data
/// directory is `data_dir` under a fresh seal key (written to `data_dir/seal.key`), and points
/// `config` at that key; returns the fleet's side (the CSV `data_dir/creds.csv`, the state file
/// `data_dir/fleet.seq`).
/// What the demo does before it starts its edge; tests do the same (feature `demo`).
#[cfg(feature = "demo")]
pub fn provision_edge(
    data_dir: &Path,
    config: &mut EdgeConfig,
    plan: &ProvisionPlan,
) -> anyhow::Result<OscoreSpec> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let creds_path = data_dir.join("creds.csv");
    let mut csv = Vec::new();
    write_csv(plan, &mut csv)?;
    std::fs::write(&creds_path, &csv).with_context(|| format!("write {}", creds_path.display()))?;
    let key_path = data_dir.join("seal.key");
    let key_hex = SealKey::generate_hex()?;
    write_owner_only(&key_path, key_hex.as_bytes())
        .with_context(|| format!("write {}", key_path.display()))?;
    let key = SealKey::from_hex(key_hex.trim())?;
    let mut registry = Registry::open(&config.registry.db_path(data_dir), Some(key))?;
    registry.import_csv(csv.as_slice())?;
    config.registry.seal_key_file = Some(key_path);
    Ok(OscoreSpec {
        credentials: creds_path,
        state: data_dir.join("fleet.seq"),
    })
}

/// Writes `bytes` to a new or truncated file that only its owner may read (mode 0600 on Unix:
/// the edge refuses a seal key file open to its group or others).
#[cfg(feature = "demo")]
fn write_owner_only(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    // A file that existed keeps its mode through `open`: restrict it too.
    #[cfg(unix)]
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use v6iot_edge_router::registry_db::{DeviceFilter, Registry, SealKey};

    use super::*;

    fn plan(devices: u64, first: u64) -> ProvisionPlan {
        ProvisionPlan {
            devices,
            first,
            id_prefix: "sim".to_owned(),
            class: 1,
            prefix: "2001:db8:1200:305::/64".parse().unwrap(),
        }
    }

    #[test]
    fn kids_are_minimal_big_endian_serials() {
        assert_eq!(kid_of(0), [0]);
        assert_eq!(kid_of(0xff), [0xff]);
        assert_eq!(kid_of(0x100), [1, 0]);
        assert_eq!(kid_of(0x00ff_ffff_ffff_ffff).len(), 7);
        assert_eq!(kid_of(u64::MAX).len(), 8);
    }

    #[test]
    fn the_csv_parses_and_imports() {
        let mut text = Vec::new();
        assert_eq!(write_csv(&plan(300, 0), &mut text).unwrap(), 300);
        let text = String::from_utf8(text).unwrap();
        let mut lines = text.lines();
        csv::check_header(lines.next().unwrap()).unwrap();
        let records: Vec<DeviceRecord> = lines.map(|l| csv::parse_line(l).unwrap()).collect();
        assert_eq!(records.len(), 300);
        assert_eq!(records[0].id, "sim000000");
        assert_eq!(records[299].id, "sim000299");
        assert_eq!(records[256].kid, [1, 0]);
        let kids: HashSet<_> = records.iter().map(|r| r.kid.clone()).collect();
        let secrets: HashSet<_> = records
            .iter()
            .map(|r| r.master_secret.as_bytes().to_vec())
            .collect();
        assert_eq!((kids.len(), secrets.len()), (300, 300));

        let dir = std::env::temp_dir().join(format!("v6iot-provision-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = SealKey::from_bytes(&[9; 32]).unwrap();
        let mut reg = Registry::open(&dir.join("registry.db"), Some(key)).unwrap();
        let report = reg.import_csv(text.as_bytes()).unwrap();
        assert_eq!(report.imported, 300);
        assert_eq!(reg.list(&DeviceFilter::default()).unwrap().len(), 300);
        drop(reg);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn serials_that_do_not_fit_a_kid_are_refused() {
        let e = write_csv(&plan(2, (1 << 56) - 1), Vec::new()).unwrap_err();
        assert!(e.to_string().contains("2^56"), "{e}");
    }
}
