//! Which objects a rule copies: `include` and `exclude` globs on the key (rclone's glob
//! rules), and bounds on size and age. Applied in the diff, before any request for the
//! object: an excluded source object is counted as such and never copied, and an excluded
//! destination object is never deleted.
//!
//! Globs match the key relative to the rule's prefix being listed (the whole key without
//! prefixes). As in rclone: `*` matches within one path segment, `**` across segments, `?`
//! one character but `/`, `[a-z]` a class, `{jpg,png}` alternatives; a glob that starts
//! with `/` is anchored at the prefix, one that does not matches at any depth (`*.jpg`
//! matches `a/b/c.jpg`); one that ends with `/` matches everything under that directory.
//! An object matching any `exclude` is excluded; otherwise, when there are `include`s, it
//! must match one of them. (rclone applies mixed filters in the order given; ferry applies
//! every exclude first, which never depends on the order.)

use std::time::Duration;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// A rule's filters; the default admits everything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    /// The globs as given, for display and comparison.
    pub include_globs: Vec<String>,
    pub exclude_globs: Vec<String>,
    /// Objects smaller than this are excluded.
    pub min_size: Option<u64>,
    /// Objects larger than this are excluded.
    pub max_size: Option<u64>,
    /// Objects modified more recently than this are excluded (they are too young).
    pub min_age: Option<Duration>,
    /// Objects modified longer ago than this are excluded.
    pub max_age: Option<Duration>,
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.include_globs == other.include_globs
            && self.exclude_globs == other.exclude_globs
            && self.min_size == other.min_size
            && self.max_size == other.max_size
            && self.min_age == other.min_age
            && self.max_age == other.max_age
    }
}

/// One glob as rclone reads it, in globset's terms.
fn compile(pattern: &str) -> Result<Glob, String> {
    if pattern.is_empty() {
        return Err("is empty".into());
    }
    let mut p = pattern.to_string();
    if p.ends_with('/') {
        p.push_str("**");
    }
    let p = match p.strip_prefix('/') {
        Some(anchored) => anchored.to_string(),
        None => format!("{{{p},**/{p}}}"),
    };
    GlobBuilder::new(&p)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| format!("{pattern:?} is not a glob: {}", e.kind()))
}

fn set(patterns: &[String]) -> Result<Option<GlobSet>, Vec<(usize, String)>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    let mut problems = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        match compile(p) {
            Ok(glob) => {
                builder.add(glob);
            }
            Err(e) => problems.push((i, e)),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| vec![(0, e.to_string())])
}

/// What a bad filter is: the key (`include`, `exclude`, with the glob's index) and why.
pub type FilterProblem = (String, String);

impl Filter {
    /// Builds a filter; every bad glob is reported, with its index.
    pub fn new(
        include: Vec<String>,
        exclude: Vec<String>,
        min_size: Option<u64>,
        max_size: Option<u64>,
        min_age: Option<Duration>,
        max_age: Option<Duration>,
    ) -> Result<Filter, Vec<FilterProblem>> {
        let mut problems = Vec::new();
        let inc = set(&include).unwrap_or_else(|e| {
            problems.extend(e.into_iter().map(|(i, m)| (format!("include[{i}]"), m)));
            None
        });
        let exc = set(&exclude).unwrap_or_else(|e| {
            problems.extend(e.into_iter().map(|(i, m)| (format!("exclude[{i}]"), m)));
            None
        });
        if let (Some(lo), Some(hi)) = (min_size, max_size)
            && lo > hi
        {
            problems.push((
                "min_size".into(),
                format!("{lo} bytes is more than max_size ({hi} bytes): nothing would be copied"),
            ));
        }
        if let (Some(lo), Some(hi)) = (min_age, max_age)
            && lo > hi
        {
            problems.push((
                "min_age".into(),
                format!(
                    "{} is more than max_age ({}): nothing would be copied",
                    humantime::format_duration(lo),
                    humantime::format_duration(hi)
                ),
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Filter {
            include: inc,
            exclude: exc,
            include_globs: include,
            exclude_globs: exclude,
            min_size,
            max_size,
            min_age,
            max_age,
        })
    }

    /// Whether it admits everything.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether an object is copied: `key` relative to the prefix being listed, its size,
    /// and its Last-Modified against `now_ms` (both ms since the epoch).
    pub fn admits(&self, key: &str, size: u64, last_modified_ms: i64, now_ms: i64) -> bool {
        if self.exclude.as_ref().is_some_and(|x| x.is_match(key)) {
            return false;
        }
        if self.include.as_ref().is_some_and(|i| !i.is_match(key)) {
            return false;
        }
        if self.min_size.is_some_and(|m| size < m) || self.max_size.is_some_and(|m| size > m) {
            return false;
        }
        let age_ms = now_ms.saturating_sub(last_modified_ms);
        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
        if self.min_age.is_some_and(|m| age_ms < ms(m)) {
            return false;
        }
        if self.max_age.is_some_and(|m| age_ms > ms(m)) {
            return false;
        }
        true
    }
}

/// This machine's clock in ms since the Unix epoch: the "now" the age filters are read at.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(include: &[&str], exclude: &[&str]) -> Filter {
        Filter::new(
            include.iter().map(|s| s.to_string()).collect(),
            exclude.iter().map(|s| s.to_string()).collect(),
            None,
            None,
            None,
            None,
        )
        .unwrap()
    }

    fn admits(f: &Filter, key: &str) -> bool {
        f.admits(key, 1, 0, 0)
    }

    #[test]
    fn globs_follow_rclone_rules() {
        let f = globs(&["*.jpg"], &[]);
        assert!(admits(&f, "a.jpg"));
        assert!(admits(&f, "2024/06/a.jpg"), "unanchored: any depth");
        assert!(!admits(&f, "a.jpg.txt"));
        let anchored = globs(&["/*.jpg"], &[]);
        assert!(admits(&anchored, "a.jpg"));
        assert!(!admits(&anchored, "x/a.jpg"), "* stays within a segment");
        let deep = globs(&["/raw/**"], &[]);
        assert!(admits(&deep, "raw/a/b/c"));
        assert!(!admits(&deep, "cooked/raw/a"));
        let dir = globs(&[], &["tmp/"]);
        assert!(!admits(&dir, "tmp/a"));
        assert!(!admits(&dir, "x/tmp/a/b"));
        assert!(admits(&dir, "tmpfile"));
        let alt = globs(&["*.{jpg,png}", "file?.txt"], &[]);
        assert!(admits(&alt, "a.png") && admits(&alt, "file1.txt"));
        assert!(!admits(&alt, "file10.txt") && !admits(&alt, "a.gif"));
    }

    #[test]
    fn an_exclude_wins_over_an_include() {
        let f = globs(&["*.jpg"], &["private/**"]);
        assert!(admits(&f, "public/a.jpg"));
        assert!(!admits(&f, "private/a.jpg"));
        assert!(!admits(&f, "public/a.txt"));
    }

    #[test]
    fn sizes_and_ages_bound_what_is_copied() {
        let day = 86_400_000i64;
        let f = Filter::new(
            vec![],
            vec![],
            Some(10),
            Some(100),
            Some(Duration::from_secs(3600)),
            Some(Duration::from_secs(7 * 86_400)),
        )
        .unwrap();
        let now = 30 * day;
        assert!(f.admits("k", 10, now - day, now));
        assert!(f.admits("k", 100, now - day, now));
        assert!(!f.admits("k", 9, now - day, now), "too small");
        assert!(!f.admits("k", 101, now - day, now), "too large");
        assert!(!f.admits("k", 50, now - 60_000, now), "too young");
        assert!(!f.admits("k", 50, now - 8 * day, now), "too old");
    }

    #[test]
    fn bad_filters_are_each_named() {
        let e = Filter::new(
            vec!["ok".into(), "[unclosed".into()],
            vec!["".into()],
            Some(5),
            Some(1),
            None,
            None,
        )
        .unwrap_err();
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["include[1]", "exclude[0]", "min_size"], "{e:?}");
        assert!(Filter::default().is_empty());
    }
}
