//! Endpoints that need no ferry config file: `s3://BUCKET[/PREFIX]` (the AWS environment,
//! or `--src-*`/`--dst-*` flags and `FERRY_SRC_*`/`FERRY_DST_*` variables), and the S3
//! remotes of rclone's own config file, read as rclone reads them and never written.
//!
//! Each becomes an `[endpoints.NAME]` table, checked by the same config validation as one
//! written by hand.

use std::path::{Path, PathBuf};

use ferry_core::config::Problem;

/// What the command line and the environment say about one `s3://` side.
#[derive(Debug, Default, Clone)]
pub(crate) struct SideFlags {
    /// `--src-endpoint` / `--dst-endpoint`.
    pub endpoint: Option<String>,
    /// `--src-profile` / `--dst-profile`.
    pub profile: Option<String>,
    /// `--src-region` / `--dst-region`.
    pub region: Option<String>,
}

impl SideFlags {
    pub(crate) fn given(&self) -> Option<&'static str> {
        if self.endpoint.is_some() {
            Some("endpoint")
        } else if self.profile.is_some() {
            Some("profile")
        } else if self.region.is_some() {
            Some("region")
        } else {
            None
        }
    }
}

fn problem(path: &str, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The endpoint of an `s3://` side (`side` is `src` or `dst`). The URL is the flag's, else
/// `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, else AWS's own. Credentials are the
/// profile's when one is given, else the keys in `FERRY_SRC_ACCESS_KEY_ID` and
/// `FERRY_SRC_SECRET_ACCESS_KEY` (`DST` for the destination) when set, else the standard AWS
/// chain (environment, profile, web identity, instance metadata).
pub(crate) fn s3_url_endpoint(side: &str, flags: &SideFlags) -> Result<toml::Table, Problem> {
    let mut t = toml::Table::new();
    let url = flags
        .endpoint
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"));
    let region = flags
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| {
            let profile = flags
                .profile
                .clone()
                .or_else(|| env("AWS_PROFILE"))
                .unwrap_or_else(|| "default".into());
            profile_region(&profile)
        })
        .unwrap_or_else(|| "us-east-1".into());
    if let Some(url) = &url {
        t.insert("path_style".into(), (!is_aws(url)).into());
        t.insert("url".into(), url.clone().into());
    }
    t.insert("region".into(), region.into());
    let upper = side.to_ascii_uppercase();
    let (key_var, secret_var) = (
        format!("FERRY_{upper}_ACCESS_KEY_ID"),
        format!("FERRY_{upper}_SECRET_ACCESS_KEY"),
    );
    match (&flags.profile, env(&key_var), env(&secret_var)) {
        (Some(profile), _, _) => {
            t.insert("profile".into(), profile.clone().into());
        }
        (None, Some(_), Some(_)) => {
            t.insert("access_key_id_env".into(), key_var.into());
            t.insert("secret_access_key_env".into(), secret_var.into());
        }
        (None, Some(_), None) | (None, None, Some(_)) => {
            return Err(problem(
                &format!("{key_var}, {secret_var}"),
                "give both variables, or neither (then the AWS credential chain is used)",
            ));
        }
        (None, None, None) => {}
    }
    Ok(t)
}

/// Whether `url` is one of AWS's own S3 hosts (virtual-hosted addressing works there).
fn is_aws(url: &str) -> bool {
    let host = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn")
}

/// The region of a profile in the shared AWS config file (`AWS_CONFIG_FILE`, else
/// `~/.aws/config`), if it names one.
fn profile_region(profile: &str) -> Option<String> {
    let path = env("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws/config")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let wanted = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    ini_section(&text, &wanted)?
        .into_iter()
        .find(|(k, _)| k == "region")
        .map(|(_, v)| v)
}

/// The `key = value` lines of section `[name]` of an INI text, or `None` without one.
fn ini_section(text: &str, name: &str) -> Option<Vec<(String, String)>> {
    let mut inside = false;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = section.trim() == name;
            if inside {
                found.get_or_insert_with(Vec::new);
            }
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            found
                .get_or_insert_with(Vec::new)
                .push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    found
}

/// rclone's config file, where rclone looks for it: `RCLONE_CONFIG`, else
/// `$XDG_CONFIG_HOME/rclone/rclone.conf` or `~/.config/rclone/rclone.conf`, else
/// `~/.rclone.conf`.
pub(crate) fn rclone_config_path() -> Option<PathBuf> {
    if let Some(p) = env("RCLONE_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let home = env("HOME").map(PathBuf::from);
    let config_dir = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".config")));
    let candidates = [
        config_dir.map(|d| d.join("rclone/rclone.conf")),
        home.map(|h| h.join(".rclone.conf")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// rclone providers whose S3 API wants virtual-hosted addressing (rclone sets
/// `force_path_style = false` for them itself).
const VIRTUAL_HOSTED: [&str; 5] = ["AWS", "Alibaba", "TencentCOS", "Netease", "Qiniu"];

/// The endpoint of rclone remote `name` in the config file at `path`: `Ok(None)` when the
/// file has no such remote, a problem when it has one ferry cannot use.
pub(crate) fn rclone_remote(path: &Path, name: &str) -> Result<Option<toml::Table>, Problem> {
    let at = format!("{name} (rclone remote in {})", path.display());
    let text = std::fs::read_to_string(path)
        .map_err(|e| problem(&path.display().to_string(), format!("cannot read: {e}")))?;
    if text.contains("RCLONE_ENCRYPT_V0:") {
        return Err(problem(
            &path.display().to_string(),
            "rclone's config is encrypted, and ferry cannot read it: give the endpoint in \
             ferry.toml, or use s3:// with the AWS environment",
        ));
    }
    let Some(section) = ini_section(&text, name) else {
        return Ok(None);
    };
    let get = |key: &str| {
        section
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let kind = get("type").unwrap_or_default();
    if kind != "s3" {
        return Err(problem(
            &at,
            format!(
                "is of type {kind:?}; ferry copies between S3 APIs, so only remotes of type \"s3\" work"
            ),
        ));
    }
    let provider = get("provider").unwrap_or_else(|| "AWS".into());
    let mut t = toml::Table::new();
    if let Some(endpoint) = get("endpoint") {
        let url = if endpoint.contains("://") {
            endpoint
        } else {
            format!("https://{endpoint}")
        };
        t.insert("url".into(), url.into());
    }
    let path_style = match get("force_path_style") {
        Some(v) => v == "true",
        None => !VIRTUAL_HOSTED.contains(&provider.as_str()),
    };
    t.insert("path_style".into(), path_style.into());
    t.insert(
        "region".into(),
        get("region").unwrap_or_else(|| "us-east-1".into()).into(),
    );
    let env_auth = get("env_auth").is_some_and(|v| v == "true");
    match (get("access_key_id"), get("secret_access_key")) {
        (Some(key), Some(secret)) if !env_auth => {
            t.insert("access_key_id".into(), key.into());
            t.insert("secret_access_key".into(), secret.into());
        }
        (Some(_), None) | (None, Some(_)) if !env_auth => {
            return Err(problem(
                &at,
                "has one of access_key_id and secret_access_key without the other",
            ));
        }
        // env_auth, or no keys: the AWS credential chain, as rclone's env_auth does.
        _ => {}
    }
    if get("session_token").is_some() {
        return Err(problem(
            &at,
            "has a session_token, which ferry does not read from rclone's config: use \
             env_auth = true with the AWS environment, or s3:// with a profile",
        ));
    }
    Ok(Some(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_rclone_remote_of_type_s3_becomes_an_endpoint() {
        let dir = std::env::temp_dir().join(format!("ferry-rclone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rclone.conf");
        std::fs::write(
            &path,
            "[minio]\ntype = s3\nprovider = Minio\nendpoint = http://127.0.0.1:9000\n\
             access_key_id = AK\nsecret_access_key = SK\n\n\
             [aws]\ntype = s3\nprovider = AWS\nenv_auth = true\nregion = eu-west-1\n\n\
             [drive]\ntype = drive\n",
        )
        .unwrap();
        let minio = rclone_remote(&path, "minio").unwrap().unwrap();
        assert_eq!(minio["url"].as_str(), Some("http://127.0.0.1:9000"));
        assert_eq!(minio["path_style"].as_bool(), Some(true));
        assert_eq!(minio["secret_access_key"].as_str(), Some("SK"));
        let aws = rclone_remote(&path, "aws").unwrap().unwrap();
        assert_eq!(aws.get("url"), None);
        assert_eq!(aws["path_style"].as_bool(), Some(false));
        assert_eq!(aws["region"].as_str(), Some("eu-west-1"));
        assert_eq!(aws.get("access_key_id"), None);
        let drive = rclone_remote(&path, "drive").unwrap_err();
        assert!(
            drive.message.contains("type \"drive\""),
            "{}",
            drive.message
        );
        assert!(rclone_remote(&path, "nothere").unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn aws_hosts_are_told_from_others() {
        assert!(is_aws("https://s3.eu-west-1.amazonaws.com"));
        assert!(!is_aws("http://127.0.0.1:9000"));
        assert!(!is_aws("https://amazonaws.com.example.org"));
    }
}
