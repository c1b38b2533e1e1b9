//! `proxima token new`: makes an access token for `proxima serve --tokens FILE`.
//!
//! Why a command: a token must be random (256 bits from the operating system) and only its hash
//! may be stored, so that the tokens file can be read by the service without holding secrets.
//! The command prints the token once, on stdout (so `TOKEN=$(proxima token new …)` works), and
//! appends `<id> <role> sha256:<hex>` to the file (created with mode 0600). Exit codes: 0 the
//! token was made, 2 an error (unreadable or malformed file, an id already in use).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use proxima_server::auth::{Role, Tokens, line, new_token, valid_id};

/// `proxima token …`.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token, print it (once) and append its hash to the tokens file.
    New(NewArgs),
}

/// A token's role.
#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    /// Identify, find, compare, check, list.
    Read,
    /// Also enrol and remove brands, calibrate, read the audit log.
    Admin,
}

/// Arguments of `proxima token new`.
#[derive(Args)]
pub struct NewArgs {
    /// What the token may do.
    #[arg(long, value_enum)]
    role: RoleArg,
    /// Tokens file to append to (created when missing); `proxima serve --tokens` reads it.
    #[arg(long)]
    tokens: PathBuf,
    /// The token's id, recorded in the audit log (1-64 of A-Z a-z 0-9 _ . -); default `<role>-<n>`.
    #[arg(long)]
    id: Option<String>,
}

/// Runs `proxima token …`.
pub fn run(cmd: TokenCommand) -> Result<ExitCode> {
    let TokenCommand::New(a) = cmd;
    let role = match a.role {
        RoleArg::Read => Role::Read,
        RoleArg::Admin => Role::Admin,
    };
    let existing = if a.tokens.exists() { Tokens::load(&a.tokens)? } else { Tokens::default() };
    let id = match a.id {
        Some(id) => {
            if !valid_id(&id) {
                bail!("--id {id:?}: use 1-64 characters of A-Z a-z 0-9 _ . -");
            }
            if existing.contains_id(&id) {
                bail!("--id {id:?} is already in {}", a.tokens.display());
            }
            id
        }
        None => (1..).map(|n| format!("{}-{n}", role.as_str())).find(|id| !existing.contains_id(id)).expect("a free id"),
    };
    let token = new_token().context("drawing random bytes for the token")?;
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&a.tokens).with_context(|| format!("opening {}", a.tokens.display()))?;
    let needs_newline = std::fs::read(&a.tokens).map(|b| !b.is_empty() && !b.ends_with(b"\n")).unwrap_or(false);
    let text = format!("{}{}\n", if needs_newline { "\n" } else { "" }, line(&id, role, &token));
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).with_context(|| format!("writing {}", a.tokens.display()))?;
    println!("{token}");
    eprintln!("token {id:?} ({}) added to {}; it is shown only this once", role.as_str(), a.tokens.display());
    Ok(ExitCode::SUCCESS)
}
