//! The one rule a `sync` makes from its command line: SRC and DST parsed, their endpoints
//! found (the config file, s3:// sides, rclone remotes), and the rule built and validated as
//! the config file is, with a bad value reported under its flag.

use std::path::PathBuf;

use ferry_core::config::{
    Config, ConfigError, Destination, Overwrite, Problem, Rule, Source, Stop, StorageClass,
};
use ferry_core::filter::Filter;
use ferry_core::units::{ByteSize, parse_duration};

use super::{CopyFlags, PairArgs, SyncArgs};
use crate::failure::Failure;
use crate::startup::config_path;

/// One side of the pair, as given on the command line.
#[derive(Debug, PartialEq, Eq)]
struct Side {
    endpoint: String,
    bucket: String,
    /// Empty, or ending in `/`.
    prefix: String,
    /// Given as `s3://BUCKET`: its endpoint comes from the environment and flags.
    s3_url: bool,
}

/// One pairing as a command line gives it: SRC, DST, the flags that reach and filter them,
/// and (for `sync`) what is copied and until when.
pub(crate) struct Line<'a> {
    pub(crate) src: &'a str,
    pub(crate) dst: &'a str,
    pub(crate) pair: &'a PairArgs,
    /// `None`: the defaults (`verify` copies nothing).
    pub(crate) copy: Option<&'a CopyFlags>,
    pub(crate) redis: Option<&'a str>,
}

impl SyncArgs {
    pub(super) fn line(&self) -> Line<'_> {
        Line {
            src: &self.src,
            dst: &self.dst,
            pair: &self.pair,
            copy: Some(&self.copy),
            redis: self.redis.as_deref(),
        }
    }
}

pub(super) fn problem(path: &str, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

pub(super) fn config_error(problems: Vec<Problem>) -> Failure {
    Failure::Config(ConfigError { problems })
}

/// Parses `ENDPOINT:BUCKET[/PREFIX]`; a prefix names a directory (`a/b` means `a/b/`).
fn parse_side(arg: &str, value: &str) -> Result<Side, Problem> {
    if let Some(rest) = value.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(problem(
                arg,
                format!("{value:?} is not s3://BUCKET[/PREFIX] (no bucket)"),
            ));
        }
        let mut prefix = prefix.to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        return Ok(Side {
            endpoint: format!("s3-{}", arg.to_ascii_lowercase()),
            bucket: bucket.into(),
            prefix,
            s3_url: true,
        });
    }
    let Some((endpoint, rest)) = value.split_once(':') else {
        return Err(problem(
            arg,
            format!("{value:?} is not ENDPOINT:BUCKET[/PREFIX] (no ':')"),
        ));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if endpoint.is_empty() || bucket.is_empty() {
        return Err(problem(
            arg,
            format!("{value:?} is not ENDPOINT:BUCKET[/PREFIX] (empty endpoint or bucket)"),
        ));
    }
    let mut prefix = prefix.to_string();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    Ok(Side {
        endpoint: endpoint.into(),
        bucket: bucket.into(),
        prefix,
        s3_url: false,
    })
}

/// The rule's name: readable, and the same for the same pair of buckets on every machine.
/// The prefix is not part of it: syncing a prefix of a pair synced before is the same rule
/// (one ledger per pair; a bucket belongs to one pairing only).
fn rule_name(src: &Side, dst: &Side, endpoints: &toml::Table) -> String {
    // A named endpoint by its name; an s3:// one by what it points at (its URL, or AWS and
    // the region), since its name is the same for every s3:// side.
    let id = |side: &Side| {
        if !side.s3_url {
            return side.endpoint.clone();
        }
        let e = endpoints.get(&side.endpoint).and_then(|e| e.as_table());
        let url = e.and_then(|e| e.get("url")).and_then(|u| u.as_str());
        let region = e.and_then(|e| e.get("region")).and_then(|r| r.as_str());
        match (url, region) {
            (Some(url), _) => format!("s3+{}", url.trim_end_matches('/').to_ascii_lowercase()),
            (None, region) => format!("s3+aws:{}", region.unwrap_or_default()),
        }
    };
    let spec = format!("{}:{} {}:{}", id(src), src.bucket, id(dst), dst.bucket);
    let hash = xxhash_rust::xxh3::xxh3_64(spec.as_bytes());
    let readable: String = format!("sync-{}-{}", src.bucket, dst.bucket)
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(54)
        .collect();
    format!("{readable}-{:08x}", hash as u32)
}

/// Builds the config: the file's `[redis]` and endpoints, and one rule from the arguments,
/// checked as a rule of the file would be. A bad flag value is reported under the flag's name.
pub(crate) fn build_config(args: &Line<'_>) -> Result<(Config, String), Failure> {
    let (src, dst) = sides(args)?;
    let File {
        found,
        text,
        mut table,
        added,
    } = endpoints(args, &src, &dst)?;
    let name = rule_name(&src, &dst, &added);
    let rule = rule(args, &name, &src, &dst);
    // The file's own rules are not this command's.
    table.remove("rules");
    if let Some(url) = args.redis {
        let redis = table
            .entry("redis")
            .or_insert_with(|| toml::Table::new().into());
        if let Some(r) = redis.as_table_mut() {
            r.insert("url".into(), url.to_string().into());
        }
    }
    let path = found
        .as_ref()
        .map_or_else(|| "no config file".to_string(), |p| p.display().to_string());
    // Every problem is told at once, the flags' and the file's, as `ferry validate` does.
    let (mut config, rule) = match (parse_file(&table, &path)?, rule) {
        (Ok(config), Ok(rule)) => (config, rule),
        (config, rule) => {
            let flags = rule.err().unwrap_or_default();
            return Err(config_error(
                flags
                    .into_iter()
                    .chain(config.err().into_iter().flatten())
                    .collect(),
            ));
        }
    };
    let problems = config.check_rule(&rule);
    if !problems.is_empty() {
        return Err(config_error(
            problems
                .into_iter()
                .map(|p| problem(&flag_of(&p.path), p.message))
                .collect(),
        ));
    }
    config.rules = vec![rule];
    if let Some(found) = &found {
        ferry_core::config::warn_if_exposed(found, &text);
    }
    if let Some(redis) = &config.redis {
        redis.remember_passwords();
    }
    Ok((config, name))
}

/// SRC and DST, parsed; a destination prefix must be empty or the source's.
fn sides(args: &Line<'_>) -> Result<(Side, Side), Failure> {
    let src = parse_side("SRC", args.src);
    let dst = parse_side("DST", args.dst);
    let (src, dst) = match (src, dst) {
        (Ok(s), Ok(d)) => (s, d),
        (s, d) => {
            return Err(config_error(
                [s.err(), d.err()].into_iter().flatten().collect(),
            ));
        }
    };
    if !dst.prefix.is_empty() && dst.prefix != src.prefix {
        return Err(config_error(vec![problem(
            "DST",
            format!(
                "prefix {:?} differs from the source's {:?}: ferry copies keys under the same names, so a destination prefix must be empty or the source's",
                dst.prefix, src.prefix
            ),
        )]));
    }
    Ok((src, dst))
}

/// The config file as read (or none), as a table with every side's endpoint in it, and the
/// endpoints added to it (s3:// sides, rclone remotes).
struct File {
    found: Option<PathBuf>,
    text: String,
    table: toml::Table,
    added: toml::Table,
}

/// Reads the config file where one is needed or there, and adds the endpoints of the sides
/// it does not name: an s3:// side's (from the environment and flags), an rclone remote's.
fn endpoints(args: &Line<'_>, src: &Side, dst: &Side) -> Result<File, Failure> {
    // Each named side's rclone remote, looked up once: `None` when rclone's config has no
    // such remote (or there is no rclone config).
    let rclone = crate::remote::rclone_config_path();
    let remote = |side: &Side| -> Option<Result<toml::Table, Problem>> {
        let path = rclone.as_deref().filter(|_| !side.s3_url)?;
        crate::remote::rclone_remote(path, &side.endpoint).transpose()
    };
    let remotes = [remote(src), remote(dst)];
    // The config file: needed for endpoints named in it, and read when it is there for its
    // [redis]; s3:// sides and rclone remotes (usable or not: rclone's to speak of) need none.
    let needs_file = args.pair.config.is_some()
        || [src, dst]
            .iter()
            .zip(&remotes)
            .any(|(side, remote)| !side.s3_url && remote.is_none());
    let (found, path, text, mut table) = read_file(args, needs_file)?;
    let known: Vec<String> = table
        .get("endpoints")
        .and_then(|e| e.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    let mut added = toml::Table::new();
    let mut missing = Vec::new();
    for ((arg, side), remote) in [("SRC", src), ("DST", dst)].into_iter().zip(remotes) {
        let found = if side.s3_url {
            let lower = arg.to_ascii_lowercase();
            crate::remote::s3_url_endpoint(&lower, &side_flags(args, arg))
                .map(Some)
                .map_err(|p| vec![p])
        } else {
            named_endpoint(args, (arg, side), remote, &known, &path, rclone.as_deref())
        };
        match found {
            Ok(Some(endpoint)) => {
                added.insert(side.endpoint.clone(), endpoint.into());
            }
            Ok(None) => {}
            Err(problems) => missing.extend(problems),
        }
    }
    if !missing.is_empty() {
        return Err(config_error(missing));
    }
    if !added.is_empty() {
        let endpoints = table
            .entry("endpoints")
            .or_insert_with(|| toml::Table::new().into());
        if let Some(e) = endpoints.as_table_mut() {
            e.extend(added.clone());
        }
    }
    Ok(File {
        found,
        text,
        table,
        added,
    })
}

/// The endpoint a named side adds: none when the config file has it, else its rclone
/// remote's. Flags for s3:// sides are a problem here, as is a name found nowhere.
fn named_endpoint(
    args: &Line<'_>,
    (arg, side): (&str, &Side),
    remote: Option<Result<toml::Table, Problem>>,
    known: &[String],
    path: &str,
    rclone: Option<&std::path::Path>,
) -> Result<Option<toml::Table>, Vec<Problem>> {
    let mut problems = Vec::new();
    if let Some(flag) = side_flags(args, arg).given() {
        problems.push(problem(
            &format!("--{}-{flag}", arg.to_ascii_lowercase()),
            format!(
                "applies to an s3:// {arg} only; {arg} names endpoint {:?}, whose settings are its own",
                side.endpoint
            ),
        ));
    }
    let found = match remote {
        _ if known.contains(&side.endpoint) => None,
        Some(Ok(endpoint)) => Some(endpoint),
        Some(Err(p)) => {
            problems.push(p);
            None
        }
        None => {
            problems.push(problem(
                arg,
                format!(
                    "no endpoint {:?} in {path} (endpoints: {}), and no rclone remote of that name ({})",
                    side.endpoint,
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    },
                    match rclone {
                        Some(p) => format!("rclone config: {}", p.display()),
                        None => "no rclone config".into(),
                    }
                ),
            ));
            None
        }
    };
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(problems)
    }
}

/// The config file (when one is given, or there), its name as problems say it, its text
/// and its table; `needs_file` makes a missing one an error.
fn read_file(
    args: &Line<'_>,
    needs_file: bool,
) -> Result<(Option<PathBuf>, String, String, toml::Table), Failure> {
    let found = match config_path(args.pair.config.as_deref()) {
        Ok(path) => Some(path),
        Err(e) if needs_file => return Err(e),
        Err(_) => None,
    };
    let (path, text) = match &found {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path).map_err(|e| {
                config_error(vec![problem(
                    &path.display().to_string(),
                    format!("cannot read the config file: {e}"),
                )])
            })?,
        ),
        None => ("no config file".to_string(), String::new()),
    };
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        config_error(vec![problem(&path, e.message().to_string())])
    })?;
    Ok((found, path, text, table))
}

/// The `--src-*` or `--dst-*` flags of an s3:// side.
fn side_flags(args: &Line<'_>, arg: &str) -> crate::remote::SideFlags {
    match arg {
        "SRC" => crate::remote::SideFlags {
            endpoint: args.pair.src_endpoint.clone(),
            profile: args.pair.src_profile.clone(),
            region: args.pair.src_region.clone(),
        },
        _ => crate::remote::SideFlags {
            endpoint: args.pair.dst_endpoint.clone(),
            profile: args.pair.dst_profile.clone(),
            region: args.pair.dst_region.clone(),
        },
    }
}

/// The rule SRC, DST and the flags make, each value read by the config file's own parser;
/// a value it refuses is a problem under its flag.
fn rule(args: &Line<'_>, name: &str, src: &Side, dst: &Side) -> Result<Rule, Vec<Problem>> {
    let mut problems = Vec::new();
    let copy = args.copy.cloned().unwrap_or_default();
    let size = |flag: &str, value: &Option<String>, problems: &mut Vec<Problem>| {
        parsed(flag, value, ByteSize::parse, problems)
    };
    let duration = |flag: &str, value: &Option<String>, problems: &mut Vec<Problem>| {
        parsed(flag, value, parse_duration, problems)
    };
    let source = Source {
        endpoint: src.endpoint.clone(),
        bucket: src.bucket.clone(),
        prefixes: Some(src.prefix.clone())
            .filter(|p| !p.is_empty())
            .into_iter()
            .collect(),
    };
    let destination = Destination {
        endpoint: dst.endpoint.clone(),
        bucket: dst.bucket.clone(),
        storage_class: parsed(
            "--storage-class",
            &args.pair.storage_class,
            StorageClass::parse_named,
            &mut problems,
        ),
    };
    let mut rule = Rule::with_defaults(name.to_string(), source, destination);
    // `--once` is the default (and conflicts with `--stop`).
    let stop = Some(copy.stop.clone().unwrap_or_else(|| "once".into()));
    rule.stop = parsed("--stop", &stop, Stop::parse, &mut problems).unwrap_or(Stop::Once);
    if let Some(interval) = duration("--interval", &copy.interval, &mut problems) {
        rule.interval = interval;
    }
    if let Some(overwrite) = parsed(
        "--overwrite",
        &copy.overwrite,
        Overwrite::parse,
        &mut problems,
    ) {
        rule.overwrite = overwrite;
    }
    if let Some(threshold) = size(
        "--multipart-threshold",
        &copy.multipart_threshold,
        &mut problems,
    ) {
        rule.multipart_threshold = threshold;
    }
    if let Some(part) = size("--part-size", &copy.part_size, &mut problems) {
        rule.part_size = part;
    }
    rule.overwrite_unmanaged = copy.overwrite_unmanaged;
    rule.delete = copy.delete;
    versions(&copy, &mut rule, &mut problems);
    let filter = Filter::new(
        args.pair.include.clone(),
        args.pair.exclude.clone(),
        size("--min-size", &args.pair.min_size, &mut problems).map(|s| s.0),
        size("--max-size", &args.pair.max_size, &mut problems).map(|s| s.0),
        duration("--min-age", &args.pair.min_age, &mut problems),
        duration("--max-age", &args.pair.max_age, &mut problems),
    );
    match filter {
        Ok(filter) => rule.filter = filter,
        // A filter's problem names its field (`include[1]`, `min_size`): the flag's name.
        Err(bad) => problems.extend(bad.into_iter().map(|(field, message)| {
            let field = field.split('[').next().unwrap_or(&field);
            problem(&format!("--{}", field.replace('_', "-")), message)
        })),
    }
    if problems.is_empty() {
        Ok(rule)
    } else {
        Err(problems)
    }
}

/// `value` read by `parse`; `None` when not given, or (with a problem under `flag`) refused.
fn parsed<T>(
    flag: &str,
    value: &Option<String>,
    parse: impl Fn(&str) -> Result<T, String>,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let value = value.as_deref()?;
    parse(value)
        .map_err(|message| problems.push(problem(flag, message)))
        .ok()
}

/// `--all-versions` and `--at`.
fn versions(copy: &CopyFlags, rule: &mut Rule, problems: &mut Vec<Problem>) {
    if copy.all_versions {
        rule.versions = ferry_core::config::Versions::All;
    }
    if let Some(at) = &copy.at {
        match humantime::parse_rfc3339_weak(at) {
            Ok(when) => {
                let ms = when
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                rule.at_ms = Some(ms);
            }
            Err(e) => problems.push(problem(
                "--at",
                format!(
                    "{at:?} is not a time ({e}): give it as RFC 3339, e.g. 2026-11-30T12:00:00Z"
                ),
            )),
        }
    }
}

/// The argument a problem of the built rule comes from, by its path within the rule: a side's
/// endpoint, bucket or prefix from SRC or DST, a setting from its flag.
fn flag_of(path: &str) -> String {
    match path.split(['.', '[']).next().unwrap_or(path) {
        "source" | "name" => "SRC".into(),
        "destination" if path == "destination.storage_class" => "--storage-class".into(),
        // A pairing of a bucket with itself.
        "destination" | "rules" => "DST".into(),
        "versions" => "--all-versions".into(),
        field => format!("--{}", field.replace('_', "-")),
    }
}

/// Parses and validates the config file with the endpoints the sides added, as the config
/// file is; a problem in it is reported under the file's name.
fn parse_file(table: &toml::Table, path: &str) -> Result<Result<Config, Vec<Problem>>, Failure> {
    let rendered = toml::to_string(table).map_err(|e| Failure::Runtime(e.into()))?;
    Ok(Config::from_toml(&rendered).map_err(|e| {
        e.problems
            .into_iter()
            .map(|p| Problem {
                path: format!("{} ({path})", p.path),
                message: p.message,
            })
            .collect()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_parse_endpoint_bucket_and_a_directory_prefix() {
        assert_eq!(
            parse_side("SRC", "east:photos/2024").unwrap(),
            Side {
                endpoint: "east".into(),
                bucket: "photos".into(),
                prefix: "2024/".into(),
                s3_url: false,
            }
        );
        assert_eq!(parse_side("SRC", "east:photos").unwrap().prefix, "");
        assert_eq!(parse_side("SRC", "east:photos/a/").unwrap().prefix, "a/");
        for bad in ["photos", ":photos", "east:", "east:/x"] {
            let p = parse_side("SRC", bad).unwrap_err();
            assert_eq!(p.path, "SRC");
            assert!(p.message.contains(bad), "{}", p.message);
        }
    }

    #[test]
    fn rule_names_are_valid_stable_and_tell_pairs_apart() {
        let side = |e: &str, b: &str, p: &str| Side {
            endpoint: e.into(),
            bucket: b.into(),
            prefix: p.into(),
            s3_url: false,
        };
        let none = toml::Table::new();
        let rule_name = |a: &Side, b: &Side| rule_name(a, b, &none);
        let a = rule_name(&side("east", "photos", ""), &side("west", "photos-dr", ""));
        assert_eq!(
            a,
            rule_name(&side("east", "photos", ""), &side("west", "photos-dr", ""))
        );
        assert!(a.starts_with("sync-photos-photos-dr-"), "{a}");
        let b = rule_name(
            &side("east", "photos", "x/"),
            &side("west", "photos-dr", "x/"),
        );
        assert_eq!(a, b, "a prefix of the pair is the same rule");
        let c = rule_name(&side("east", "photos", ""), &side("north", "photos-dr", ""));
        assert_ne!(a, c);
        let long = rule_name(
            &side("e", &"b".repeat(63), ""),
            &side("w", &"c".repeat(63), ""),
        );
        assert!(long.len() <= 63, "{long}");
        assert!(
            long.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        );
    }

    #[test]
    fn s3_url_sides_are_named_by_what_they_point_at() {
        let side = parse_side("SRC", "s3://photos/2024").unwrap();
        assert_eq!(
            (
                side.endpoint.as_str(),
                side.bucket.as_str(),
                side.prefix.as_str()
            ),
            ("s3-src", "photos", "2024/")
        );
        assert!(side.s3_url);
        assert_eq!(parse_side("DST", "s3://").unwrap_err().path, "DST");
        let dst = parse_side("DST", "s3://photos-dr").unwrap();
        let at = |url: &str| {
            let mut endpoints = toml::Table::new();
            for name in ["s3-src", "s3-dst"] {
                let mut e = toml::Table::new();
                e.insert("url".into(), url.into());
                endpoints.insert(name.into(), e.into());
            }
            rule_name(&side, &dst, &endpoints)
        };
        assert_eq!(at("http://a:9000"), at("http://a:9000/"));
        assert_ne!(at("http://a:9000"), at("http://b:9000"));
    }

    /// SyncArgs from a command line after `ferry sync`.
    fn args(line: &[&str]) -> SyncArgs {
        #[derive(clap::Parser)]
        struct Line {
            #[command(flatten)]
            sync: SyncArgs,
        }
        let argv = std::iter::once("sync").chain(line.iter().copied());
        <Line as clap::Parser>::try_parse_from(argv)
            .expect("a command line")
            .sync
    }

    #[test]
    fn a_rule_is_read_from_typed_flags_and_each_bad_value_names_its_flag() {
        let (src, dst) = (
            parse_side("SRC", "east:photos/2024").unwrap(),
            parse_side("DST", "west:photos-dr").unwrap(),
        );
        let good = args(&[
            "east:photos/2024",
            "west:photos-dr",
            "--part-size",
            "8MiB",
            "--interval",
            "1h",
            "--overwrite",
            "always",
            "--stop",
            "empty:3",
            "--include",
            "*.jpg",
            "--storage-class",
            "STANDARD_IA",
        ]);
        let built = rule(&good.line(), "r", &src, &dst).expect("a rule");
        assert_eq!(built.part_size, ByteSize(8 * ByteSize::MIB));
        assert_eq!(built.interval, std::time::Duration::from_secs(3600));
        assert_eq!(
            (built.overwrite, built.stop),
            (Overwrite::Always, Stop::Empty(3))
        );
        assert_eq!(built.source.prefixes, ["2024/"]);
        assert_eq!(
            built.destination.storage_class,
            StorageClass::parse("STANDARD_IA")
        );
        assert!(
            built.filter.admits("2024/a.jpg", 1, 0, 0)
                && !built.filter.admits("2024/a.png", 1, 0, 0)
        );

        let bad = args(&[
            "east:photos",
            "west:photos-dr",
            "--part-size",
            "big",
            "--interval",
            "soon",
            "--min-age",
            "2d",
            "--max-age",
            "1d",
            "--include",
            "[unclosed",
            "--storage-class",
            "COLD",
        ]);
        let problems = rule(&bad.line(), "r", &src, &dst).unwrap_err();
        let flags: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            flags,
            [
                "--storage-class",
                "--interval",
                "--part-size",
                "--include",
                "--min-age"
            ],
            "{problems:?}"
        );
    }

    #[test]
    fn a_problem_of_the_built_rule_names_the_argument_it_came_from() {
        assert_eq!(flag_of("source.bucket"), "SRC");
        assert_eq!(flag_of("source.prefixes[0]"), "SRC");
        assert_eq!(flag_of("destination.endpoint"), "DST");
        assert_eq!(flag_of("destination.storage_class"), "--storage-class");
        assert_eq!(flag_of("rules"), "DST");
        assert_eq!(flag_of("part_size"), "--part-size");
        assert_eq!(flag_of("multipart_threshold"), "--multipart-threshold");
    }

    #[test]
    fn a_bad_flag_and_a_bad_config_file_are_told_together() {
        let dir = std::env::temp_dir().join(format!("ferry-sync-both-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ferry.toml");
        std::fs::write(
            &file,
            "[endpoints.east]\nurl = 5\n\n[endpoints.west]\nurl = \"http://127.0.0.1:1\"\n",
        )
        .unwrap();
        let line = args(&[
            "east:photos",
            "west:photos-dr",
            "--config",
            file.to_str().unwrap(),
            "--part-size",
            "big",
        ]);
        let result = build_config(&line.line());
        std::fs::remove_dir_all(&dir).unwrap();
        let Err(Failure::Config(e)) = result else {
            panic!("not a config error");
        };
        let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"--part-size"), "{paths:?}");
        assert!(
            paths.iter().any(|p| p.starts_with("endpoints.east.url")),
            "{paths:?}"
        );
    }
}
