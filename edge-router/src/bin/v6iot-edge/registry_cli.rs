//! The `v6iot-edge devices …` and `v6iot-edge audit …` subcommands (arguments and actions;
//! main.rs only dispatches to them).
//!
//! The database is `registry.db` in the data directory, or `registry.db` of the `[registry]`
//! section of `--config`; the seal key comes from `registry.seal_key_file` or, without one,
//! from the `V6IOT_SEAL_KEY` environment variable. Commands that only read or change state
//! (`list`, `show`, `revoke`, `set-state`, `audit`) work without the key (`audit verify` then
//! cannot check the checkpoint's signature, and says so).

use std::io::{BufRead, BufReader, Write as _};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use time::OffsetDateTime;

use v6iot_edge_router::audit::AuditRow;
use v6iot_edge_router::config::EdgeConfig;
use v6iot_edge_router::registry_db::admin::{
    self, RegistryPlace, VerifyRequest, format_time, parse_rfc3339,
};
use v6iot_edge_router::registry_db::{
    DeviceFilter, DeviceRecord, DeviceState, Ipv6Prefix, MasterSecret, Registry,
};

/// Where the registry is.
#[derive(Debug, Clone, Args)]
pub(crate) struct DbArgs {
    /// Configuration file (TOML): its `data_dir` and `[registry]` section locate the database
    /// and the seal key.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (the database is `registry.db` in it, unless the configuration names
    /// another file).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
}

/// `v6iot-edge devices …`
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum DevicesCommand {
    /// Add one device.
    Add {
        /// Device id (endpoint name).
        #[arg(long)]
        id: String,
        /// OSCORE kid, hex (1-7 bytes).
        #[arg(long)]
        kid: String,
        /// OSCORE master secret, hex (16-32 bytes); `-` reads it from standard input (keeps it
        /// out of the process list and the shell history).
        #[arg(long)]
        secret: String,
        /// OSCORE master salt, hex.
        #[arg(long)]
        salt: Option<String>,
        /// Address plan device class (1-255).
        #[arg(long, default_value_t = 1)]
        class: u8,
        /// Allowed IPv6 prefix, e.g. 2001:db8:1200:305::/64 (repeat for several).
        #[arg(long = "prefix")]
        prefixes: Vec<Ipv6Prefix>,
    },
    /// Import a credentials CSV (`-` for standard input): all lines or none.
    Import {
        /// The file (header `id,kid_hex,secret_hex,salt_hex,class,prefixes`).
        file: PathBuf,
    },
    /// List devices (without secrets).
    List {
        /// Only devices in this state (active, quarantined, revoked).
        #[arg(long)]
        state: Option<DeviceState>,
        /// Only devices of this class.
        #[arg(long)]
        class: Option<u8>,
    },
    /// Show one device (not its secret).
    Show {
        /// Device id.
        id: String,
    },
    /// Revoke a device for good.
    Revoke {
        /// Device id.
        id: String,
    },
    /// Set a device's state: active, quarantined or revoked.
    SetState {
        /// Device id.
        id: String,
        /// The new state.
        state: DeviceState,
    },
    /// Give a device a new random master secret and print it (hex) on standard output.
    Rotate {
        /// Device id.
        id: String,
    },
    /// Write a new random seal key (64 hex digits) to FILE, readable by its owner only.
    Keygen {
        /// The key file to create (it must not exist).
        file: PathBuf,
    },
}

/// `v6iot-edge audit …`
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct AuditArgs {
    /// Where the registry is.
    #[command(flatten)]
    pub db: DbArgs,
    /// `verify`.
    #[command(subcommand)]
    pub action: Option<AuditAction>,
    /// Which device held this address (with --at; alone: every row about the address).
    #[arg(long)]
    pub address: Option<Ipv6Addr>,
    /// The time for --address, RFC 3339 (e.g. 2026-05-01T12:00:00Z).
    #[arg(long, requires = "address", value_parser = parse_rfc3339)]
    pub at: Option<OffsetDateTime>,
    /// Every row about this device.
    #[arg(long, conflicts_with = "address")]
    pub device: Option<String>,
}

/// `v6iot-edge audit verify`
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum AuditAction {
    /// Recompute the hash chain and name the first row that does not verify; check that the
    /// trail reaches its checkpoint (the edge's signed file when there is one, and/or a head
    /// published on the security topic), naming the rows missing from its end.
    Verify(VerifyArgs),
}

/// What `audit verify` checks the trail's end against (see `audit::checkpoint`).
#[derive(Debug, Clone, Args)]
pub(crate) struct VerifyArgs {
    /// A head hash the trail must reach (64 hex digits, e.g. `head` of a checkpoint the edge
    /// published); with --expect-rows it must be that row's hash.
    #[arg(long, value_parser = parse_hash)]
    pub expect_head: Option<[u8; 32]>,
    /// The trail must have at least this many rows (`rows` of a published checkpoint).
    #[arg(long)]
    pub expect_rows: Option<u64>,
    /// A signed checkpoint file. Default: the edge's own (`[audit] checkpoint_file`, else
    /// `audit.checkpoint` in the data directory) when it exists.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
}

/// Why a `--expect-head` hash is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum HashArgError {
    /// Not hex.
    #[error("{0}")]
    Hex(#[from] hex::FromHexError),
    /// Not 32 bytes (how many).
    #[error("a hash is 32 bytes (64 hex digits), not {0}")]
    Length(usize),
}

fn parse_hash(text: &str) -> Result<[u8; 32], HashArgError> {
    let bytes = hex::decode(text.trim())?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| HashArgError::Length(bytes.len()))
}

/// Where the registry is, from `--config` and `--data-dir`.
fn locate(db: &DbArgs) -> anyhow::Result<RegistryPlace> {
    let config = match &db.config {
        Some(path) => EdgeConfig::load(path).with_context(|| format!("{}", path.display()))?,
        None => EdgeConfig::with_site("site"),
    };
    Ok(config.registry_place(db.data_dir.as_deref())?)
}

/// Devices found sharing a master secret are named on standard error.
fn warn_duplicates(registry: Registry) -> Registry {
    for d in registry.duplicate_secrets() {
        eprintln!("warning: {d}");
    }
    registry
}

/// Opens an existing registry (reading commands must not create one at a mistyped path).
fn open_existing(place: &RegistryPlace) -> anyhow::Result<Registry> {
    Ok(warn_duplicates(admin::open_existing(place)?))
}

/// Opens or creates the registry (and its directory).
fn open_or_create(place: &RegistryPlace) -> anyhow::Result<Registry> {
    Ok(warn_duplicates(admin::open_or_create(place)?))
}

fn hex_arg(name: &str, text: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(text.trim()).map_err(|e| anyhow!("--{name}: {e}"))
}

/// Runs `v6iot-edge devices …`.
///
/// # Errors
///
/// Any failure, with a message for the operator.
pub(crate) fn devices(db: &DbArgs, command: DevicesCommand) -> anyhow::Result<()> {
    ignore_closed_stdout(run_devices(db, command))
}

/// `… | head` closing standard output early is not a failure.
fn ignore_closed_stdout(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn run_devices(db: &DbArgs, command: DevicesCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        DevicesCommand::Keygen { file } => {
            admin::write_new_seal_key(&file)?;
            eprintln!(
                "wrote a new seal key to {}; point registry.seal_key_file at it and keep a copy \
                 apart from the database: without it the master secrets cannot be read",
                file.display()
            );
        }
        DevicesCommand::Add {
            id,
            kid,
            secret,
            salt,
            class,
            prefixes,
        } => {
            let secret = if secret == "-" {
                let mut line = zeroize::Zeroizing::new(String::new());
                std::io::stdin().lock().read_line(&mut line)?;
                MasterSecret::new(hex_arg("secret", &line)?)
            } else {
                MasterSecret::new(hex_arg("secret", &secret)?)
            };
            let record = DeviceRecord {
                kid: hex_arg("kid", &kid)?,
                master_secret: secret,
                master_salt: salt.map(|s| hex_arg("salt", &s)).transpose()?,
                class,
                prefixes,
                state: DeviceState::Active,
                id,
            };
            let id = record.id.clone();
            let mut registry = open_or_create(&locate(db)?)?;
            registry.add(record)?;
            writeln!(out, "added {id}")?;
        }
        DevicesCommand::Import { file } => {
            let mut registry = open_or_create(&locate(db)?)?;
            let started = Instant::now();
            let report = if file == Path::new("-") {
                registry.import_csv(std::io::stdin().lock())?
            } else {
                let f = std::fs::File::open(&file)
                    .with_context(|| format!("open {}", file.display()))?;
                registry
                    .import_csv(BufReader::with_capacity(1 << 16, f))
                    .with_context(|| format!("{}", file.display()))?
            };
            let secs = started.elapsed().as_secs_f64();
            writeln!(
                out,
                "imported {} device(s) from {} in {secs:.2} s ({:.0} devices/s)",
                report.imported,
                file.display(),
                report.imported as f64 / secs.max(1e-9)
            )?;
        }
        DevicesCommand::List { state, class } => {
            list(db, &DeviceFilter { state, class }, &mut out)?
        }
        DevicesCommand::Show { id } => show(db, &id, &mut out)?,
        DevicesCommand::Revoke { id } => {
            let mut registry = open_existing(&locate(db)?)?;
            let previous = registry.revoke(&id)?;
            if previous == DeviceState::Revoked {
                writeln!(out, "{id} was already revoked")?;
            } else {
                writeln!(out, "revoked {id} (was {previous})")?;
            }
        }
        DevicesCommand::SetState { id, state } => {
            let mut registry = open_existing(&locate(db)?)?;
            let previous = registry.set_state(&id, state)?;
            writeln!(out, "{id}: {previous} -> {state}")?;
        }
        DevicesCommand::Rotate { id } => {
            let mut registry = open_existing(&locate(db)?)?;
            let secret = registry.rotate(&id)?;
            writeln!(out, "{}", secret.to_hex().as_str())?;
            eprintln!("{id}: new master secret above; deliver it to the device");
        }
    }
    Ok(())
}

/// `devices list`.
fn list(db: &DbArgs, filter: &DeviceFilter, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let registry = open_existing(&locate(db)?)?;
    let devices = registry.list(filter)?;
    writeln!(
        out,
        "{:<24} {:<14} {:>5} {:<11} prefixes",
        "id", "kid", "class", "state"
    )?;
    for d in &devices {
        let prefixes: Vec<String> = d.prefixes.iter().map(ToString::to_string).collect();
        writeln!(
            out,
            "{:<24} {:<14} {:>5} {:<11} {}",
            d.id,
            hex::encode(&d.kid),
            d.class,
            d.state,
            prefixes.join(" ")
        )?;
    }
    eprintln!("{} device(s)", devices.len());
    Ok(())
}

/// `devices show`.
fn show(db: &DbArgs, id: &str, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let at = locate(db)?;
    let has_key = at.key.is_some();
    let registry = open_existing(&at)?;
    let d = registry
        .info(id)?
        .ok_or_else(|| anyhow!("no device `{id}`"))?;
    let secret = if has_key {
        // Opening it checks the row; the secret itself is not printed.
        registry.get(id)?;
        format!("{} bytes, sealed (opens with this key)", d.secret_len)
    } else {
        format!("{} bytes, sealed (no key given: not checked)", d.secret_len)
    };
    let prefixes: Vec<String> = d.prefixes.iter().map(ToString::to_string).collect();
    writeln!(out, "id:       {}", d.id)?;
    writeln!(out, "kid:      {}", hex::encode(&d.kid))?;
    writeln!(out, "secret:   {secret}")?;
    writeln!(
        out,
        "salt:     {}",
        d.master_salt
            .as_deref()
            .map_or_else(|| "(none)".to_owned(), hex::encode)
    )?;
    writeln!(out, "class:    {}", d.class)?;
    writeln!(out, "state:    {}", d.state)?;
    writeln!(out, "prefixes: {}", prefixes.join(" "))?;
    writeln!(out, "created:  {}", format_time(d.created))?;
    writeln!(out, "updated:  {}", format_time(d.updated))?;
    Ok(())
}

/// Runs `v6iot-edge audit …`.
///
/// # Errors
///
/// Any failure; a broken chain and an address nobody held are errors too (exit code 1).
pub(crate) fn audit(args: AuditArgs) -> anyhow::Result<()> {
    ignore_closed_stdout(run_audit(args))
}

fn run_audit(args: AuditArgs) -> anyhow::Result<()> {
    let at = locate(&args.db)?;
    let registry = open_existing(&at)?;
    let log = registry.audit();
    let mut out = std::io::stdout().lock();
    if let Some(AuditAction::Verify(v)) = args.action {
        return verify(&registry, &at, &v, &mut out);
    }
    let rows = match (args.address, args.at, args.device) {
        (Some(address), Some(at), _) => {
            return match log.who_had(address, at)? {
                Some(device) => {
                    writeln!(out, "{device}")?;
                    Ok(())
                }
                None => Err(anyhow!("no device held {address} at {}", format_time(at))),
            };
        }
        (Some(address), None, _) => log.address_history(address)?,
        (None, _, Some(device)) => log.history(&device)?,
        (None, _, None) => bail!("give --address ADDR [--at TIME], --device ID, or `verify`"),
    };
    for row in &rows {
        print_row(&mut out, row)?;
    }
    eprintln!("{} row(s)", rows.len());
    Ok(())
}

/// `audit verify`: the chain, then the anchors (see [`VerifyArgs`]).
fn verify(
    registry: &Registry,
    place: &RegistryPlace,
    args: &VerifyArgs,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let request = VerifyRequest {
        checkpoint: args.checkpoint.clone(),
        expect_rows: args.expect_rows,
        expect_head: args.expect_head,
    };
    let verified = admin::verify_trail(registry, place, &request)?;
    if let Some(file) = &verified.no_checkpoint {
        eprintln!(
            "no checkpoint file {}: rows cut from the end cannot be detected without \
             --expect-rows/--expect-head (from a checkpoint the edge published)",
            file.display()
        );
    }
    writeln!(
        out,
        "audit chain ok: {} rows, head {}",
        verified.report.rows,
        hex::encode(verified.report.head)
    )?;
    for source in &verified.reached {
        writeln!(out, "reaches {source}")?;
    }
    Ok(())
}

fn print_row(out: &mut impl std::io::Write, row: &AuditRow) -> std::io::Result<()> {
    let e = &row.event;
    writeln!(
        out,
        "{:>8} {} {:<17} {:<20} {:<28} {}",
        row.seq,
        format_time(e.at),
        e.kind.as_str(),
        e.device.as_deref().unwrap_or("-"),
        e.address.map_or_else(|| "-".to_owned(), |a| a.to_string()),
        e.detail
    )
}
