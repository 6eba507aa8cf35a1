//! Secrets read from the config: remembered, so that no message shows one, and warned
//! about where the file that holds them is readable by everyone.

use std::path::Path;

use super::split_userinfo;

/// Every secret this process has read (keys, tokens, Redis passwords), for [`redact_known`].
static KNOWN_SECRETS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Secrets shorter than this are not searched for (they would match ordinary text).
const SHORTEST_SECRET: usize = 4;

/// Remembers `secret` for [`redact_known`].
pub fn remember(secret: &str) {
    if secret.len() < SHORTEST_SECRET {
        return;
    }
    let mut known = KNOWN_SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    if !known.iter().any(|k| k == secret) {
        known.push(secret.to_string());
    }
}

/// `text` with every secret read so far, and every URL's user and password, replaced by `***`:
/// for text ferry did not write itself (a panic's message, a library's error).
pub fn redact_known(text: &str) -> String {
    let mut out = text.to_string();
    let known = KNOWN_SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    for secret in known.iter() {
        out = out.replace(secret.as_str(), "***");
    }
    drop(known);
    out.split(' ')
        .map(|word| match word.find("://") {
            Some(_) if split_userinfo(word).is_some() => redact_url(word),
            _ => word.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The secrets written in config text itself (not named by `_env`): where each is.
pub fn secrets_held(text: &str) -> Vec<String> {
    let Ok(top) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut held = Vec::new();
    if let Some(endpoints) = top.get("endpoints").and_then(toml::Value::as_table) {
        for (name, endpoint) in endpoints {
            if endpoint.get("secret_access_key").is_some() {
                held.push(format!("endpoints.{name}.secret_access_key"));
            }
        }
    }
    if let Some(redis) = top.get("redis").and_then(toml::Value::as_table) {
        let urls = redis
            .get("url")
            .into_iter()
            .chain(
                redis
                    .get("urls")
                    .and_then(toml::Value::as_array)
                    .into_iter()
                    .flatten(),
            )
            .filter_map(toml::Value::as_str);
        if urls
            .filter_map(split_userinfo)
            .any(|(_, userinfo, _)| userinfo.contains(':'))
        {
            held.push("redis.url (a password)".to_string());
        }
    }
    held
}

/// Warns when the config file at `path` (whose text is `text`) holds a secret and every user
/// of the machine can read it.
pub fn warn_if_exposed(path: &Path, text: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode();
        let held = secrets_held(text);
        if mode & 0o004 != 0 && !held.is_empty() {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                secrets = %held.join(", "),
                "the config file holds secrets and every user of this machine can read it: \
                 chmod 600 it, or move the secrets to environment variables (*_env)"
            );
        }
    }
}

/// Replaces the whole userinfo of `scheme://user:password@host` with `***`, whatever
/// characters the password holds.
pub fn redact_url(url: &str) -> String {
    match split_userinfo(url) {
        Some((scheme, _, rest)) => format!("{scheme}***@{rest}"),
        None => url.to_string(),
    }
}
