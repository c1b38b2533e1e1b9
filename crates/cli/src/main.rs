use clap::Parser;

/// Proxima: deep metric learning in Rust.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
