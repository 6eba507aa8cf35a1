//! `ferry init [FILE]`: writes a commented starter config, readable by its owner alone, and
//! never over an existing file.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use ferry_core::config::{ConfigError, Problem};

use crate::failure::Failure;

#[derive(Args)]
pub(crate) struct InitArgs {
    /// Where to write it.
    #[arg(value_name = "FILE", default_value = "ferry.toml")]
    path: PathBuf,
}

/// The starter: two endpoints (one S3-compatible store, one on AWS), the optional Redis and
/// a rule for the long-running commands, each line saying what it is for.
const STARTER: &str = r#"# ferry's config. Check it with: ferry validate --config ferry.toml
# Reference: docs/configuration.md.
#
# Endpoints are S3 APIs, by name: `ferry sync store:photos aws:photos-dr` copies bucket
# photos of endpoint "store" to bucket photos-dr of endpoint "aws".

[endpoints.store]
url = "http://127.0.0.1:9000"   # the S3 API's base URL (MinIO, Garage, Ceph RGW, R2, ...)
region = "us-east-1"            # the signing region the store expects
path_style = true               # host/bucket/key addressing, which most stores want
# Credentials, one way only; with none, the AWS credential chain is used (AWS_ACCESS_KEY_ID
# and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity, instance metadata).
# access_key_id_env = "STORE_ACCESS_KEY_ID"          # names of environment variables
# secret_access_key_env = "STORE_SECRET_ACCESS_KEY"
# profile = "store"                                  # a profile of ~/.aws/config

[endpoints.aws]
# No url: AWS's own endpoints for the region.
region = "eu-west-1"

# With Redis, any number of machines share the work: run the same `ferry sync` on each, or
# `ferry coordinator` once and `ferry worker` anywhere. Without it, `ferry sync` keeps its
# queue in a state directory (~/.local/state/ferry).
# [redis]
# url = "redis://127.0.0.1:6379"   # rediss:// for TLS; a password goes in the URL
# namespace = "ferry"

# Rules, for `ferry coordinator` and `ferry run` (`ferry sync` makes its own from SRC and DST).
# [[rules]]
# name = "photos"
# source = { endpoint = "store", bucket = "photos" }
# destination = { endpoint = "aws", bucket = "photos-dr" }
# interval = "15m"            # pause between iterations
# stop = "never"              # or "once", or "empty:N"
"#;

pub(crate) fn run(args: InitArgs) -> Result<(), Failure> {
    let refuse = |message: String| {
        Failure::Config(ConfigError {
            problems: vec![Problem {
                path: args.path.display().to_string(),
                message,
            }],
        })
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&args.path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            refuse("exists already; ferry init writes a new file only".into())
        }
        _ => refuse(format!("cannot be created: {e}")),
    })?;
    file.write_all(STARTER.as_bytes())
        .map_err(|e| refuse(format!("cannot be written: {e}")))?;
    println!(
        "wrote {} (readable by you alone): name your endpoints in it, then\n  \
         ferry validate --config {0}\n  ferry sync ENDPOINT:BUCKET ENDPOINT:BUCKET --config {0}",
        args.path.display()
    );
    Ok(())
}
