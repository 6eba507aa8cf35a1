//! A TOML table as fields read one by one, each problem named by its path.

use super::*;

/// A table being read: typed getters record problems, and `finish` reports the keys nobody read.
pub(super) struct Fields<'a> {
    prefix: String,
    pub(super) table: &'a Table,
    read: std::cell::RefCell<BTreeSet<String>>,
}

impl<'a> Fields<'a> {
    pub(super) fn new(prefix: &str, table: &'a Table) -> Self {
        Fields {
            prefix: prefix.to_string(),
            table,
            read: Default::default(),
        }
    }

    pub(super) fn path(&self, key: &str) -> String {
        match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}.{key}", self.prefix),
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.read.borrow_mut().insert(key.to_string());
        self.table.get(key)
    }

    pub(super) fn typed<T>(
        &self,
        key: &str,
        what: &str,
        problems: &mut Vec<Problem>,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Option<T> {
        let value = self.get(key)?;
        let out = f(value);
        if out.is_none() {
            problems.push(Problem::new(
                self.path(key),
                format!("must be {what}, found {}", value.type_str()),
            ));
        }
        out
    }

    pub(super) fn string(&self, key: &str, problems: &mut Vec<Problem>) -> Option<String> {
        self.typed(key, "a string", problems, |v| {
            v.as_str().map(str::to_string)
        })
    }

    pub(super) fn required_string(&self, key: &str, problems: &mut Vec<Problem>) -> Option<String> {
        let value = self.string(key, problems);
        if self.table.get(key).is_none() {
            problems.push(Problem::new(self.path(key), "is required"));
        }
        value
    }

    pub(super) fn bool(&self, key: &str, problems: &mut Vec<Problem>) -> Option<bool> {
        self.typed(key, "true or false", problems, Value::as_bool)
    }

    /// The integer `key` as `check` takes it; `default` when absent, or (with the problem
    /// `check` names) when refused.
    pub(super) fn integer_as<T>(
        &self,
        key: &str,
        default: T,
        problems: &mut Vec<Problem>,
        check: impl Fn(i64) -> Result<T, String>,
    ) -> T {
        match self.integer(key, problems).map(check) {
            None => default,
            Some(Ok(value)) => value,
            Some(Err(message)) => {
                problems.push(Problem::new(self.path(key), message));
                default
            }
        }
    }

    /// The string `key`, one of `choices` (by name); `default` when absent or not one.
    pub(super) fn choice<T: Copy>(
        &self,
        key: &str,
        choices: &[(&str, T)],
        default: T,
        problems: &mut Vec<Problem>,
    ) -> T {
        let Some(given) = self.string(key, problems) else {
            return default;
        };
        crate::config::one_of(&given, choices).unwrap_or_else(|message| {
            problems.push(Problem::new(self.path(key), message));
            default
        })
    }

    pub(super) fn integer(&self, key: &str, problems: &mut Vec<Problem>) -> Option<i64> {
        self.typed(key, "an integer", problems, Value::as_integer)
    }

    pub(super) fn array(&self, key: &str, problems: &mut Vec<Problem>) -> Option<&'a Vec<Value>> {
        self.typed(key, "an array", problems, Value::as_array)
    }

    /// An array of strings; an item that is not one is a problem (and left out).
    pub(super) fn strings(&self, key: &str, problems: &mut Vec<Problem>) -> Option<Vec<String>> {
        let items = self.array(key, problems)?;
        Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| match v.as_str() {
                    Some(p) => Some(p.to_string()),
                    None => {
                        problems.push(Problem::new(
                            self.path(&format!("{key}[{i}]")),
                            "must be a string",
                        ));
                        None
                    }
                })
                .collect(),
        )
    }

    pub(super) fn table(&self, key: &str, problems: &mut Vec<Problem>) -> Option<Fields<'a>> {
        let path = self.path(key);
        self.typed(key, "a table", problems, Value::as_table)
            .map(|t| Fields::new(&path, t))
    }

    pub(super) fn size(&self, key: &str, problems: &mut Vec<Problem>) -> Option<ByteSize> {
        let value = self.get(key)?;
        let parsed = match value {
            Value::String(s) => ByteSize::parse(s),
            Value::Integer(n) if *n >= 0 => Ok(ByteSize(*n as u64)),
            other => Err(format!(
                "must be a size such as \"100MiB\", found {}",
                other.type_str()
            )),
        };
        parsed
            .map_err(|e| problems.push(Problem::new(self.path(key), e)))
            .ok()
    }

    pub(super) fn duration(&self, key: &str, problems: &mut Vec<Problem>) -> Option<Duration> {
        let text = self.string(key, problems)?;
        parse_duration(&text)
            .map_err(|e| problems.push(Problem::new(self.path(key), e)))
            .ok()
    }

    /// A price or rate: a number (an integer too), finite and not negative.
    pub(super) fn amount(&self, key: &str, problems: &mut Vec<Problem>) -> Option<f64> {
        let value = self.typed(key, "a number", problems, |v| {
            v.as_float().or_else(|| v.as_integer().map(|n| n as f64))
        })?;
        if value.is_finite() && value >= 0.0 {
            Some(value)
        } else {
            problems.push(Problem::new(
                self.path(key),
                format!("must be zero or more, found {value}"),
            ));
            None
        }
    }

    pub(super) fn finish(&self, problems: &mut Vec<Problem>) {
        let read = self.read.borrow();
        for key in self.table.keys() {
            if !read.contains(key) {
                problems.push(Problem::new(self.path(key), "unknown key"));
            }
        }
    }
}
