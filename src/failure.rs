//! How a command fails, and the exit code each failure maps to: 2 for a configuration
//! error (a bad flag, file or value, or a Redis that turns ferry away), 3 for a copy `verify`
//! found incomplete, 128 + the signal for an interrupted run, 1 for anything else.

use std::process::ExitCode;

use ferry_core::config::{ConfigError, Problem};
use tracing::error;

/// A failure and the exit code it maps to.
pub(crate) enum Failure {
    Config(ConfigError),
    Runtime(anyhow::Error),
    /// A check found the copy incomplete or different (`verify`): exit 3, after this.
    Mismatch(String),
    /// Stopped by this signal, after draining (its summary already said): exit 128 + signal.
    Interrupted(i32),
}

impl Failure {
    /// A configuration error: `path` (a flag, a config key, a file) and what is wrong with it.
    pub(crate) fn config(path: &str, message: impl Into<String>) -> Failure {
        Failure::Config(ConfigError {
            problems: vec![Problem {
                path: path.into(),
                message: message.into(),
            }],
        })
    }

    /// Says what failed on stderr, once (a JSON log also gets it as a record, for a
    /// collector that reads nothing else), and gives the exit code.
    pub(crate) fn exit(self, json_logs: bool) -> ExitCode {
        let log_error = |e: &anyhow::Error| {
            if json_logs {
                error!("{e:#}");
            }
        };
        match self {
            Failure::Config(e) => {
                eprint!("{e}");
                ExitCode::from(2)
            }
            Failure::Mismatch(what) => {
                eprintln!("error: {what}");
                ExitCode::from(3)
            }
            Failure::Interrupted(signal) => ExitCode::from((128 + signal).clamp(0, 255) as u8),
            Failure::Runtime(e) => match refused(&e) {
                // Redis turned ferry away: a configuration error (a password, an ACL,
                // protected mode, a certificate), said in Redis's own words.
                Some(why) => {
                    log_error(&e);
                    eprintln!(
                        "error: {e:#}\n{why}: a configuration error, which waiting will not change; \
                         check [redis] (its URL, user and password, ca_file) and the server's settings"
                    );
                    ExitCode::from(2)
                }
                None => {
                    log_error(&e);
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            },
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

/// `Err(Interrupted)` when a signal stopped this process, so that `sync` and `run` never
/// report success for work they did not finish.
pub(crate) fn unless_interrupted() -> Result<(), Failure> {
    match crate::shutdown::received() {
        Some(signal) => Err(Failure::Interrupted(signal)),
        None => Ok(()),
    }
}

/// Why Redis refused ferry, when that is what `e` comes down to.
pub(crate) fn refused(e: &anyhow::Error) -> Option<String> {
    e.chain()
        .find_map(|c| c.downcast_ref::<ferry_queue::QueueError>())
        .and_then(|q| q.refusal())
}
