//! The `lulab` command line.

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "lulab", version, about = "Live-update lab: boot, live-update and judge QEMU hosts")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what this machine lacks (QEMU 10 from bookworm-backports, busybox…).
    Setup,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => lulab::setup::ensure_host(),
    }
}
