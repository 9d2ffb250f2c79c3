//! `v6iot-edge`: command-line entry point of the edge router.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use v6iot_edge_router::config::EdgeConfig;
use v6iot_edge_router::registry_db::cli as registry_cli;

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

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Devices { db, command } => registry_cli::devices(&db, command),
        Command::Audit(args) => registry_cli::audit(args),
        Command::CheckConfig { file } => {
            let config = EdgeConfig::load(&file).with_context(|| format!("{}", file.display()))?;
            println!("{}: ok\n{config:#?}", file.display());
            Ok(())
        }
        Command::Run {
            config,
            coap_listen,
            mqtt_url,
            data_dir,
            site,
            edge_id,
        } => {
            let mut c = match &config {
                Some(path) => {
                    EdgeConfig::load(path).with_context(|| format!("{}", path.display()))?
                }
                None => EdgeConfig::with_site(site.as_deref().unwrap_or("site")),
            };
            if let Some(v) = coap_listen {
                c.coap.listen = v;
            }
            if let Some(v) = mqtt_url {
                c.mqtt.url = v;
            }
            if let Some(v) = data_dir {
                c.data_dir = v;
            }
            if let Some(v) = site {
                c.site = v;
            }
            if let Some(v) = edge_id {
                c.edge_id = v;
            }
            c.check()?;
            // One thread carries the data path (socket, gateway, ingress, outbox hand-off, MQTT
            // session): its tasks wake each other without crossing threads. The outbox's file
            // writes and syncs and the command journal's batches run on tokio's blocking pool,
            // SQLite on the registry thread; a journaled command is sent once its batch is synced.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(v6iot_edge_router::server::run(c, None, shutdown_signal()))
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
