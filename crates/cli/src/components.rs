//! `proxima components`: every loss, wrapper, miner, distance, reducer and regularizer with its
//! pytorch-metric-learning class and implementing file, from the registries of `proxima-core`
//! (`--markdown` prints `docs/components.md`).

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use proxima_core::components;

/// Arguments of `proxima components`.
#[derive(Args)]
pub struct ComponentsArgs {
    /// Print the markdown of docs/components.md instead of plain lines.
    #[arg(long)]
    markdown: bool,
}

/// Runs `proxima components`.
pub fn run(a: ComponentsArgs) -> Result<ExitCode> {
    if a.markdown {
        print!("{}", components::markdown());
        return Ok(ExitCode::SUCCESS);
    }
    let families = [
        ("loss", components::losses()),
        ("wrapper", components::wrappers()),
        ("miner", components::miners()),
        ("distance", components::distances()),
        ("reducer", components::reducers()),
        ("regularizer", components::regularizers()),
    ];
    for (family, list) in families {
        for c in list {
            println!("{family:<12} {:<36} {:<36} {}", c.name, c.reference, c.file);
        }
    }
    Ok(ExitCode::SUCCESS)
}
