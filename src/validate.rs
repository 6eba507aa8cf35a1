//! `ferry validate`: checks a config file and prints every problem found, or what it holds.

use crate::failure::Failure;
use crate::startup::{self, Common};

/// Loads the config (every problem is reported at once) and summarizes it.
pub(crate) fn run(common: &Common) -> Result<(), Failure> {
    let config = startup::load(common)?;
    let prefixes: usize = config.rules.iter().map(|r| r.source.prefixes.len()).sum();
    println!(
        "ok: {} endpoint(s), {} rule(s), {} prefix(es); redis: {}",
        config.endpoints.len(),
        config.rules.len(),
        prefixes,
        config
            .redis
            .as_ref()
            .map_or("none (embedded)".to_string(), |r| r.redacted_url()),
    );
    Ok(())
}
