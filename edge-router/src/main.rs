//! `v6iot-edge`: command-line entry point of the edge router.

use clap::Parser;

/// v6iot edge router (not yet functional: the data path arrives with the next issue).
#[derive(Parser)]
#[command(name = "v6iot-edge", version)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!(
        "v6iot-edge {}: the edge router's data path is not built yet",
        v6iot_edge_router::VERSION
    )
}
