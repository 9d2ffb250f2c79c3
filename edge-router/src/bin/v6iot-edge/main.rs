//! `v6iot-edge`: command-line entry point of the edge router.

mod registry_cli;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use v6iot_edge_router::config::{EdgeConfig, LogFormat, LogSection};
use v6iot_edge_router::ops::logging::{self, LogReload};

/// v6iot edge router: CoAP ingress, durable outbox, MQTT bridge to the platform.
#[derive(Parser)]
#[command(name = "v6iot-edge", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge router (until Ctrl-C or SIGTERM).
    Run {
        /// Configuration file (TOML); flags below override its keys.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The keys the flags override.
        #[command(flatten)]
        flags: Overrides,
    },
    /// Check a configuration file and print it as understood.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
    /// The device registry: add, import, list, show, revoke, rotate devices.
    Devices {
        /// Where the registry is.
        #[command(flatten)]
        db: registry_cli::DbArgs,
        /// What to do.
        #[command(subcommand)]
        command: registry_cli::DevicesCommand,
    },
    /// The audit trail: who held an address when, a device's history, `verify`.
    Audit(registry_cli::AuditArgs),
}

/// mimalloc: glibc's malloc spends most of the ingress path consolidating fragments (measured:
/// 11 µs → 2.7 µs per telemetry datagram in `benches/ingress.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The flags of `run` that override the file's keys (applied again at each reload).
#[derive(Clone, clap::Args)]
struct Overrides {
    /// `coap.listen`: UDP address for CoAP.
    #[arg(long)]
    coap_listen: Option<SocketAddr>,
    /// `mqtt.url`: mqtt://host:port or mqtts://host:port.
    #[arg(long)]
    mqtt_url: Option<String>,
    /// `data_dir`: where the outbox lives.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `site`: the site's topic level.
    #[arg(long)]
    site: Option<String>,
    /// `edge_id`: this router's name.
    #[arg(long)]
    edge_id: Option<String>,
    /// `log.format`: `human` or `json` (one JSON object per line).
    #[arg(long, value_parser = ["human", "json"])]
    log_format: Option<String>,
}

impl Overrides {
    fn apply(&self, c: &mut EdgeConfig) -> anyhow::Result<()> {
        if let Some(v) = self.coap_listen {
            c.coap.listen = v;
        }
        if let Some(v) = &self.mqtt_url {
            c.mqtt.url.clone_from(v);
        }
        if let Some(v) = &self.data_dir {
            c.data_dir.clone_from(v);
        }
        if let Some(v) = &self.site {
            c.site.clone_from(v);
        }
        if let Some(v) = &self.edge_id {
            c.edge_id.clone_from(v);
        }
        if let Some(v) = &self.log_format {
            c.log.format = if v == "json" {
                LogFormat::Json
            } else {
                LogFormat::Human
            };
        }
        c.check()?;
        Ok(())
    }

    /// The configuration: the file (or defaults) with the flags over it.
    fn load(&self, file: Option<&Path>) -> anyhow::Result<EdgeConfig> {
        let mut c = match file {
            Some(path) => EdgeConfig::load(path).with_context(|| format!("{}", path.display()))?,
            None => EdgeConfig::with_site(self.site.as_deref().unwrap_or("site")),
        };
        self.apply(&mut c)?;
        Ok(c)
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run { config, flags } => {
            let c = flags.load(config.as_deref())?;
            let log = logging::init(&c.log)?;
            run(c, config, flags, log)
        }
        other => {
            logging::init(&LogSection::default())?;
            tools(other)
        }
    }
}

/// The subcommands other than `run`.
fn tools(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Devices { db, command } => registry_cli::devices(&db, command),
        Command::Audit(args) => registry_cli::audit(args),
        Command::CheckConfig { file } => {
            let config = EdgeConfig::load(&file).with_context(|| format!("{}", file.display()))?;
            config.ops.token()?;
            // secrets (the MQTT password, the dashboard token) are not printed
            println!("{}: ok\n{:#?}", file.display(), config.redacted());
            Ok(())
        }
        Command::Run { .. } => Ok(()),
    }
}

/// Runs the edge router until SIGTERM or Ctrl-C; SIGHUP reads `file` again.
fn run(
    c: EdgeConfig,
    file: Option<PathBuf>,
    flags: Overrides,
    log: LogReload,
) -> anyhow::Result<()> {
    // One thread carries the data path (socket, gateway, ingress, outbox hand-off, MQTT
    // session): its tasks wake each other without crossing threads. The outbox's file
    // writes and syncs and the command journal's batches run on tokio's blocking pool,
    // SQLite on the registry thread; a journaled command is sent once its batch is synced.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // both handlers installed before anything is bound: a SIGTERM while starting is a
        // graceful stop, a SIGHUP a reload (not the default action, an exit)
        let stop = shutdown_signal();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        #[cfg(unix)]
        {
            let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
            tokio::spawn(reload_on_sighup(hup, file, flags, log, tx));
        }
        #[cfg(not(unix))]
        let _ = (file, flags, log, tx);
        v6iot_edge_router::server::run_with_reloads(c, None, stop, Some(rx)).await
    })
}

/// On each SIGHUP: reads the configuration again, applies its log levels and hands it to the
/// server (which applies the rate limits and names what needs a restart). A file that no
/// longer parses is refused; the running configuration stays.
#[cfg(unix)]
async fn reload_on_sighup(
    hup: std::io::Result<tokio::signal::unix::Signal>,
    file: Option<PathBuf>,
    flags: Overrides,
    log: LogReload,
    to_server: tokio::sync::mpsc::UnboundedSender<EdgeConfig>,
) {
    {
        let mut hup = match hup {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: no reloads");
                return;
            }
        };
        while hup.recv().await.is_some() {
            let Some(path) = &file else {
                tracing::info!("SIGHUP: no configuration file to read again (run --config FILE)");
                continue;
            };
            tracing::info!(file = %path.display(), "SIGHUP: reading the configuration again");
            let c = match flags.load(Some(path)) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("reload refused, the running configuration stays: {e:#}");
                    continue;
                }
            };
            match log.apply(&c.log) {
                Ok(Some(levels)) => tracing::info!(%levels, "reload: log levels in force"),
                Ok(None) => tracing::info!("reload: log levels come from RUST_LOG, unchanged"),
                Err(e) => tracing::error!("reload: {e}"),
            }
            if to_server.send(c).is_err() {
                return;
            }
        }
    }
}

/// Ctrl-C or SIGTERM. The SIGTERM handler is installed when this is called (at start, before
/// the sockets are bound), so a stop asked for while the router is still starting is a
/// graceful one too.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM: only Ctrl-C stops");
                let _ = ctrl_c.await;
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
    }
}
