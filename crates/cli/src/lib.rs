//! The `proxima` command as a library: one binary for data preparation, training, evaluation,
//! recognition and benchmarking. Each subcommand lives in the module named after it (`gallery.rs`, `serve.rs`, …; helpers several of them share in `common.rs`); this file only parses and
//! dispatches ([`run`]), and `main.rs` only calls it. Being a library lets the integration tests
//! reuse the CLI's own helpers (e.g. [`io::npy_bytes`]) instead of copies.
//!
//! Exit codes (stable, for scripts):
//! - 0: success (for `query`: a known brand was found; for `check`: no page impersonates a brand)
//! - 1: a negative answer that is not an error (for `query`: unknown brand; for `check`: an
//!   impersonation)
//! - 2: an error (bad arguments, unreadable input, failed run); the message says what and where.
//!   For `serve` this includes refusing to start: a non-loopback `--addr` without `--tokens` or
//!   `--no-auth`, an unreadable tokens file or TLS certificate; for `token new`, an id in use.

mod bench;
mod check;
mod common;
mod components;
mod data;
mod demo;
mod embed;
mod ensemble;
mod eval;
mod export;
mod find;
mod gallery;
pub mod io;
mod localiser;
mod r#match;
mod perf;
mod query;
mod serve;
mod token;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Proxima: deep metric learning — train embeddings where distance means similarity, evaluate
/// them on unseen classes, and recognise new classes (e.g. brand logos) by nearest neighbour.
#[derive(Parser)]
#[command(name = "proxima", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success, 1 negative answer (e.g. unknown brand), 2 error.";

#[derive(Subcommand)]
enum Command {
    /// Evaluate saved embeddings: retrieval, clustering and pair-verification metrics, optional report.
    Eval(eval::EvalArgs),
    /// Benchmark losses, miners and evaluation on random data; prints one JSON object per line.
    Perf(perf::PerfArgs),
    /// The main job on built-in data: synthetic logos → training → unseen-brand retrieval → gallery → report.
    Demo(demo::DemoArgs),
    /// Train an embedding model from an experiment file (TOML); `--resume` continues a killed run.
    Train(train::TrainArgs),
    /// Export a trained model (and its localiser) to TorchScript or ONNX, checked against the original.
    Export(export::ExportArgs),
    /// Embed images (files or class folders) with a trained model into .npy (+ .json) or .safetensors.
    Embed(embed::EmbedArgs),
    /// Combine trained models into one whose cosine is the mean of theirs (an ordinary --model everywhere).
    Ensemble(ensemble::EnsembleArgs),
    /// Run an experiment grid with class-disjoint cross-validation (resumable) and write a report.
    Bench(bench::BenchArgs),
    /// Prepare image data: import FlickrLogos-27, synthesise logos, check a folder, benchmark loading.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Brand galleries: build from class folders (optionally calibrated), add or remove a brand, list.
    #[command(subcommand)]
    Gallery(gallery::GalleryCommand),
    /// Identify images against a gallery: top-k brands and known/unknown (exit 0 all known, 1 any unknown).
    Query(query::QueryArgs),
    /// Compare two logos: cosine similarity and same/different (exit 0 same, 1 different).
    Match(r#match::MatchArgs),
    /// Find and identify logos anywhere in photos and screenshots (exit 0 a brand found, 1 none).
    Find(find::FindArgs),
    /// Is a page impersonating a brand? `find` on its screenshot, then its domain against the brand's (exit 0 none, 1 impersonation).
    Check(check::CheckArgs),
    /// The class-agnostic logo localiser behind `find`: train it, evaluate box AP and identification.
    #[command(subcommand)]
    Localiser(localiser::LocaliserCommand),
    /// Serve identification, comparison and enrolment over HTTP (see `proxima serve --help`).
    Serve(serve::ServeArgs),
    /// Access tokens for `proxima serve --tokens FILE`: `token new --role read|admin --tokens FILE`.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Every loss, miner, distance, reducer and regularizer with its pytorch-metric-learning class and file (--markdown: docs/components.md).
    Components(components::ComponentsArgs),
}

/// Parses the command line and runs the subcommand; errors are printed and exit with code 2.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eval(args) => eval::run(args),
        Command::Perf(args) => perf::run(args),
        Command::Data(cmd) => data::run(cmd),
        Command::Train(args) => train::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Ensemble(args) => ensemble::run(args),
        Command::Export(args) => export::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Gallery(cmd) => gallery::run(cmd),
        Command::Query(args) => query::run(args),
        Command::Match(args) => r#match::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Find(args) => find::run(args),
        Command::Check(args) => check::run(args),
        Command::Localiser(cmd) => localiser::run(cmd),
        Command::Token(cmd) => token::run(cmd),
        Command::Components(args) => components::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
