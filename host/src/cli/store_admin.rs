//! `mailplug store status` and `mailplug store migrate`: the store's schema
//! seen and brought up to date by an operator, with the daemon stopped or
//! running (unlike `events` and `suppressions`, these open the store
//! themselves: there may be no daemon yet).
//!
//! Exit codes: `status` exits 0 when the schema is this binary's, 1 when
//! migrations are pending (or there is no store yet), 73 when the store
//! cannot be opened or its schema is newer than this binary; `migrate`
//! exits 0 once the schema is current (applied or already so), 73 as
//! `status` does. A `--store` URL that is not a PostgreSQL URL exits 78.

use std::path::PathBuf;

use serde_json::json;

use super::Format;
use super::exit;
use super::serve::{RawStoreUrl, raw_store_url, store_url};
use crate::store::StoreError;
use crate::store::postgres::{self, PostgresUrl};
use crate::store::sqlite;
use crate::store::status::{Migrated, SchemaState, SchemaStatus};

/// `mailplug store`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, clap::Subcommand)]
enum StoreCommand {
    /// Show the schema version found against this binary's, and what is
    /// stored, without changing the store (exit 0 current, 1 migrations
    /// pending or no store yet, 73 unreadable or newer than this binary).
    Status {
        #[command(flatten)]
        store: StoreFlags,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Same as `--format json`.
        #[arg(long, conflicts_with = "format")]
        json: bool,
    },
    /// Apply the pending schema migrations, as `serve` does at start (exit
    /// 0 once current, 73 when the store cannot be opened or is newer).
    Migrate {
        #[command(flatten)]
        store: StoreFlags,
    },
}

/// Which store: the flags and variables `serve` reads.
#[derive(Debug, clap::Args)]
struct StoreFlags {
    /// The PostgreSQL store, as `serve --store` takes it
    /// (`postgres://user:password@host:port/database`). Default: SQLite in
    /// the data dir.
    #[arg(long = "store", env = "MAILPLUG_STORE_URL", value_name = "URL", hide_env_values = true, value_parser = raw_store_url)]
    store: Option<RawStoreUrl>,
    /// The data dir of the SQLite store (`<data dir>/mailplug.db`).
    #[arg(long, env = "MAILPLUG_DATA_DIR", default_value = "mailplug-data")]
    data_dir: PathBuf,
}

/// The store a command works on.
#[derive(Debug)]
enum Location {
    /// The SQLite database file.
    Sqlite(PathBuf),
    /// The PostgreSQL database.
    Postgres(PostgresUrl),
}

impl Location {
    fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// The file path, or `host:port/database` (never a password).
    fn describe(&self) -> String {
        match self {
            Self::Sqlite(path) => path.display().to_string(),
            Self::Postgres(url) => url.target(),
        }
    }

    /// The schema found; `None` when there is no SQLite store yet.
    fn schema_status(&self) -> Result<Option<SchemaStatus>, StoreError> {
        match self {
            Self::Sqlite(path) => sqlite::schema_status(path),
            Self::Postgres(url) => postgres::schema_status(url).map(Some),
        }
    }

    fn migrate(&self) -> Result<Migrated, StoreError> {
        match self {
            Self::Sqlite(path) => sqlite::migrate_file(path),
            Self::Postgres(url) => postgres::migrate_database(url),
        }
    }
}

/// What a command prints and exits with (kept apart from printing so the
/// lib tests can check it).
#[derive(Debug)]
struct Outcome {
    code: u8,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn ok(code: u8, stdout: String) -> Self {
        Self {
            code,
            stdout,
            stderr: String::new(),
        }
    }

    fn failed(command: &str, location: &Location, e: &StoreError) -> Self {
        // Errors name the file or host:port/database, never the URL.
        Self {
            code: exit::CANTCREAT,
            stdout: String::new(),
            stderr: format!(
                "mailplug store {command}: cannot open the store at {}: {e}\n",
                location.describe()
            ),
        }
    }
}

/// Runs `mailplug store`.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let (name, flags) = match &args.command {
        StoreCommand::Status { store, .. } => ("status", store),
        StoreCommand::Migrate { store } => ("migrate", store),
    };
    let location = match store_url(flags.store.as_ref()) {
        Ok(Some(url)) => Location::Postgres(url),
        Ok(None) => Location::Sqlite(flags.data_dir.join(sqlite::FILE_NAME)),
        Err(message) => {
            eprintln!("mailplug store {name}: --store / MAILPLUG_STORE_URL: {message}");
            return Ok(exit::CONFIG);
        }
    };
    let outcome = match args.command {
        StoreCommand::Status { format, json, .. } => {
            let format = if json { Format::Json } else { format };
            status(&location, format)
        }
        StoreCommand::Migrate { .. } => migrate(&location),
    };
    print!("{}", outcome.stdout);
    eprint!("{}", outcome.stderr);
    Ok(outcome.code)
}

/// What the state found means, for people.
fn meaning(state: SchemaState) -> String {
    match state {
        SchemaState::Current => "current".to_owned(),
        SchemaState::Pending(1) => "1 migration pending: run mailplug store migrate".to_owned(),
        SchemaState::Pending(n) => format!("{n} migrations pending: run mailplug store migrate"),
        SchemaState::TooNew => "newer than this binary: upgrade mailplug".to_owned(),
    }
}

fn status(location: &Location, format: Format) -> Outcome {
    let found = match location.schema_status() {
        Ok(found) => found,
        Err(e) => return Outcome::failed("status", location, &e),
    };
    let code = match found.as_ref().map(SchemaStatus::state) {
        Some(SchemaState::Current) => exit::OK,
        None | Some(SchemaState::Pending(_)) => exit::NOT_CURRENT,
        Some(SchemaState::TooNew) => exit::CANTCREAT,
    };
    let stdout = match format {
        Format::Json => status_json(location, found.as_ref()),
        Format::Text => status_text(location, found.as_ref()),
    };
    Outcome::ok(code, stdout)
}

/// `label:` padded so the values line up.
fn line(out: &mut String, label: &str, value: impl std::fmt::Display) {
    out.push_str(&format!("{:<20}{value}\n", format!("{label}:")));
}

fn status_text(location: &Location, found: Option<&SchemaStatus>) -> String {
    let mut out = String::new();
    line(&mut out, "backend", location.backend());
    line(&mut out, "location", location.describe());
    let Some(found) = found else {
        line(
            &mut out,
            "schema",
            format_args!(
                "no store yet (this binary: version {}): mailplug store migrate or serve creates it",
                sqlite::schema_version()
            ),
        );
        return out;
    };
    line(
        &mut out,
        "schema",
        format_args!(
            "version {} (this binary: {}): {}",
            found.found,
            found.supported,
            meaning(found.state())
        ),
    );
    if let Some(c) = &found.contents {
        line(&mut out, "events", c.events);
        line(&mut out, "suppressions", c.suppressions);
        if c.pending.is_empty() {
            line(&mut out, "pending deliveries", "none");
        } else {
            out.push_str("pending deliveries:\n");
            for p in &c.pending {
                out.push_str(&format!("  {}: {}\n", p.connection, p.pending));
            }
        }
    }
    out
}

fn status_json(location: &Location, found: Option<&SchemaStatus>) -> String {
    let (state, schema) = match found {
        None => (
            "no_store",
            json!({ "found": null, "supported": sqlite::schema_version(), "pending_migrations": sqlite::schema_version() }),
        ),
        Some(s) => {
            let (state, pending) = match s.state() {
                SchemaState::Current => ("current", 0),
                SchemaState::Pending(n) => ("pending", n),
                SchemaState::TooNew => ("newer", 0),
            };
            (
                state,
                json!({ "found": s.found, "supported": s.supported, "pending_migrations": pending }),
            )
        }
    };
    let mut value = json!({
        "backend": location.backend(),
        "location": location.describe(),
        "state": state,
        "schema": schema,
    });
    if let Some(c) = found.and_then(|s| s.contents.as_ref()) {
        value["events"] = json!(c.events);
        value["suppressions"] = json!(c.suppressions);
        value["pending_deliveries"] = json!(c.pending);
    }
    format!("{value}\n")
}

fn migrate(location: &Location) -> Outcome {
    match location.migrate() {
        Ok(Migrated { from, to }) if from == to => Outcome::ok(
            exit::OK,
            format!(
                "{} store at {}: already current (version {to})\n",
                location.backend(),
                location.describe()
            ),
        ),
        Ok(Migrated { from, to }) => Outcome::ok(
            exit::OK,
            format!(
                "{} store at {}: migrated from version {from} to {to}\n",
                location.backend(),
                location.describe()
            ),
        ),
        Err(e) => Outcome::failed("migrate", location, &e),
    }
}

#[cfg(test)]
mod tests;
