//! The embedded backend: the queue for one process, with no Redis, durable in a state
//! directory.
//!
//! It keeps every guarantee of the Redis backend by running the very same Lua scripts
//! (`lua.rs`) over the same data model (`store.rs`), kept in a [redb] database: the queue
//! code above it cannot tell the two apart, and one contract suite runs against both.
//!
//! One thread owns the database. Commands reach it over a channel; it runs whatever has
//! queued up (up to [`BATCH`] requests) in one write transaction and commits it, with an
//! fsync, before it answers any of them: a reply is only ever sent for a durable change, so
//! after `kill -9` the state is exactly what the process had been told, and group commit
//! keeps the fsyncs to one per batch.
//!
//! The directory holds `state.redb` and `lock`. The lock (an OS file lock, released by the
//! OS when the process dies however it dies) names its holder's pid, so a second process is
//! refused with that pid. `state.redb` records the format it was written in; another format
//! is refused, never misread.

mod lua;
mod store;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};
use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use tokio::sync::{mpsc, oneshot};

use store::{CmdError, DATA, META, Tx};

/// The layout this ferry writes; a state dir with another is refused.
pub const STATE_FORMAT: u64 = 1;

/// Requests run in one transaction, at most.
const BATCH: usize = 512;

const SYS: TableDefinition<&str, &[u8]> = TableDefinition::new("sys");

/// Why a state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It cannot be created, opened or written.
    #[error("state dir {path}: {reason}")]
    Unusable {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another process holds it.
    #[error(
        "state dir {path} is in use by another ferry process (pid {pid}); stop it, or give this one its own --state-dir"
    )]
    Locked {
        /// The directory.
        path: PathBuf,
        /// The holder's pid, as it wrote it in the lock file.
        pid: String,
    },
    /// Another ferry version wrote it, in a format this one does not read.
    #[error(
        "state dir {path} holds state format {found} (written by ferry {by}); this ferry {ours} reads format {STATE_FORMAT} only. Use the ferry that wrote it, or move the directory away to start afresh"
    )]
    Format {
        /// The directory.
        path: PathBuf,
        /// The format found.
        found: u64,
        /// The ferry version that wrote it.
        by: String,
        /// This ferry's version.
        ours: &'static str,
    },
}

type Batch = Vec<Vec<Vec<u8>>>;

struct Request {
    commands: Batch,
    reply: oneshot::Sender<Result<Vec<Value>, CmdError>>,
}

/// A handle on the embedded store; cheap to clone. The store closes when the last handle
/// is dropped.
#[derive(Clone)]
pub(crate) struct Embedded {
    requests: mpsc::UnboundedSender<Request>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("path", &self.path)
            .finish()
    }
}

fn unusable(path: &Path, reason: impl std::fmt::Display) -> StateError {
    StateError::Unusable {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Creates `dir` (and its missing parents) for this user alone (0700), and makes an existing
/// one so: the state names buckets, keys and endpoints, which are nobody else's business.
fn private_dir(dir: &Path) -> Result<(), StateError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder
            .create(dir)
            .map_err(|e| unusable(dir, format!("creating it: {e}")))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| unusable(dir, format!("making it private (0700): {e}")))?;
    }
    #[cfg(not(unix))]
    builder
        .create(dir)
        .map_err(|e| unusable(dir, format!("creating it: {e}")))?;
    Ok(())
}

/// Creates `file` in `dir` for this user alone (0600) if it is not there, and makes it so if
/// it is (a state written by an older ferry).
fn private_file(dir: &Path, file: &Path) -> Result<(), StateError> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        options
            .open(file)
            .map_err(|e| unusable(dir, format!("opening {}: {e}", file.display())))?;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            unusable(
                dir,
                format!("making {} private (0600): {e}", file.display()),
            )
        })?;
    }
    #[cfg(not(unix))]
    options
        .open(file)
        .map_err(|e| unusable(dir, format!("opening {}: {e}", file.display())))?;
    Ok(())
}

/// Takes the directory's lock, or names who holds it.
fn lock(dir: &Path) -> Result<File, StateError> {
    let path = dir.join("lock");
    private_file(dir, &path)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| unusable(dir, format!("opening {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            if file.read_to_string(&mut pid).is_err() {
                pid.clear(); // the holder's pid is only named when it can be read
            }
            let pid = pid.trim();
            return Err(StateError::Locked {
                path: dir.to_path_buf(),
                pid: if pid.is_empty() { "unknown" } else { pid }.to_string(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(unusable(dir, format!("locking {}: {e}", path.display())));
        }
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.sync_all());
    written.map_err(|e| unusable(dir, format!("writing {}: {e}", path.display())))?;
    Ok(file)
}

/// Checks (or, in a new store, writes) the format marker; returns the next key id.
fn check_format(db: &Database, dir: &Path) -> Result<u64, StateError> {
    let bad = |e: &dyn std::fmt::Display| unusable(dir, e);
    let txn = db.begin_write().map_err(|e| bad(&e))?;
    let next_id;
    {
        let mut sys = txn.open_table(SYS).map_err(|e| bad(&e))?;
        let read =
            |sys: &redb::Table<&str, &[u8]>, k: &str| -> Result<Option<Vec<u8>>, StateError> {
                Ok(sys.get(k).map_err(|e| bad(&e))?.map(|v| v.value().to_vec()))
            };
        match read(&sys, "format")? {
            Some(raw) => {
                let found = u64::from_be_bytes(raw.as_slice().try_into().unwrap_or([0xff; 8]));
                if found != STATE_FORMAT {
                    let by = read(&sys, "written_by")?
                        .map(|v| String::from_utf8_lossy(&v).into_owned())
                        .unwrap_or_else(|| "unknown".into());
                    return Err(StateError::Format {
                        path: dir.to_path_buf(),
                        found,
                        by,
                        ours: env!("CARGO_PKG_VERSION"),
                    });
                }
            }
            None => {
                sys.insert("format", &STATE_FORMAT.to_be_bytes()[..])
                    .map_err(|e| bad(&e))?;
            }
        }
        sys.insert("written_by", env!("CARGO_PKG_VERSION").as_bytes())
            .map_err(|e| bad(&e))?;
        next_id = read(&sys, "next_id")?
            .and_then(|raw| raw.as_slice().try_into().ok())
            .map_or(1, u64::from_be_bytes);
        txn.open_table(META).map_err(|e| bad(&e))?;
        txn.open_table(DATA).map_err(|e| bad(&e))?;
    }
    txn.commit().map_err(|e| bad(&e))?;
    Ok(next_id)
}

impl Embedded {
    /// Opens (creating it if needed) the state in `dir`, with the scripts the queue will
    /// call by SHA1.
    pub(crate) fn open(dir: &Path, scripts: &[String]) -> Result<Embedded, StateError> {
        private_dir(dir)?;
        let lock = lock(dir)?;
        let file = dir.join("state.redb");
        private_file(dir, &file)?;
        let db = Database::builder()
            .set_cache_size(64 << 20)
            .create(&file)
            .map_err(|e| unusable(dir, format!("opening {}: {e}", file.display())))?;
        let mut db = db;
        let next_id = check_format(&db, dir)?;
        // Copy-on-write leaves free pages behind, which later writes reuse; giving them back
        // at each start keeps the file near what it holds (seconds for a GB-sized state).
        let started = std::time::Instant::now();
        if let Err(e) = db.compact() {
            tracing::warn!(dir = %dir.display(), error = %e, "could not compact the state file");
        }
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            "compacted the state file"
        );
        let (requests, rx) = mpsc::unbounded_channel();
        let (started, start) = std::sync::mpsc::channel();
        let scripts = scripts.to_vec();
        let dir_owned = dir.to_path_buf();
        // The Lua state is not Send: it is made, and lives, on the store's thread.
        std::thread::Builder::new()
            .name("ferry-state".into())
            .spawn(move || {
                let lua = match lua::Scripts::with(&scripts) {
                    Ok(lua) => lua,
                    Err(e) => {
                        // Unread only when the opener has given up waiting.
                        started.send(Err(e)).ok();
                        return;
                    }
                };
                started.send(Ok(())).ok();
                Server {
                    db,
                    lua,
                    next_id,
                    cursors: HashMap::new(),
                    next_cursor: 1,
                    broken: None,
                    path: dir_owned,
                    _lock: lock,
                }
                .serve(rx)
            })
            .map_err(|e| unusable(dir, format!("starting its thread: {e}")))?;
        start
            .recv()
            .map_err(|_| unusable(dir, "its thread stopped at start"))?
            .map_err(|e| unusable(dir, format!("loading the queue scripts: {e}")))?;
        Ok(Embedded {
            requests,
            path: Arc::new(dir.to_path_buf()),
        })
    }

    /// The state directory, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    async fn send(&self, commands: Batch) -> Result<Vec<Value>, RedisError> {
        let (reply, answer) = oneshot::channel();
        let gone = || {
            RedisError::from((
                redis::ErrorKind::Client,
                "the embedded state store has stopped",
            ))
        };
        self.requests
            .send(Request { commands, reply })
            .map_err(|_| gone())?;
        answer
            .await
            .map_err(|_| gone())?
            .map_err(|e| redis::make_extension_error(e.code, Some(e.detail)))
    }
}

fn args_of(cmd: &Cmd) -> Vec<Vec<u8>> {
    cmd.args_iter()
        .map(|a| match a {
            redis::Arg::Simple(b) => b.to_vec(),
            _ => b"0".to_vec(),
        })
        .collect()
}

impl ConnectionLike for Embedded {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let commands = vec![args_of(cmd)];
        Box::pin(async move {
            let mut values = self.send(commands).await?;
            Ok(values.pop().unwrap_or(Value::Nil))
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let commands: Batch = pipeline.cmd_iter().map(args_of).collect();
        Box::pin(async move {
            let values = self.send(commands).await?;
            Ok(values.into_iter().skip(offset).take(count).collect())
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// The thread that owns the database.
struct Server {
    db: Database,
    lua: lua::Scripts,
    next_id: u64,
    /// `SCAN`/`HSCAN` cursors: where each left off.
    cursors: HashMap<u64, Vec<u8>>,
    next_cursor: u64,
    /// Set once a write failed (a full disk): every later request fails with it, so the
    /// process stops instead of carrying on from state it could not save.
    broken: Option<CmdError>,
    path: PathBuf,
    _lock: File,
}

impl Server {
    fn serve(mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            if let Some(e) = &self.broken {
                for req in batch {
                    req.reply
                        .send(Err(CmdError::new(&e.code, e.detail.clone())))
                        .ok();
                }
                continue;
            }
            let result = self.run(&batch);
            match result {
                Ok(replies) => {
                    for (req, reply) in batch.into_iter().zip(replies) {
                        // A caller that went away (its task cancelled) needs no reply.
                        req.reply.send(reply).ok();
                    }
                }
                Err(e) => {
                    // Nothing of the batch was saved, and nothing after it will be.
                    let e = CmdError::new(
                        "STORAGE",
                        format!(
                            "{} cannot be written ({}), so this run stops; free space (or fix the directory), then run again to resume",
                            self.path.display(),
                            e.detail
                        ),
                    );
                    tracing::error!(error = %e.detail, "the embedded state store stopped");
                    for req in batch {
                        req.reply
                            .send(Err(CmdError::new(&e.code, e.detail.clone())))
                            .ok();
                    }
                    self.broken = Some(e);
                }
            }
        }
    }

    /// Runs a batch in one transaction and commits it; a request's reply is its commands'
    /// values, or the first error among them.
    #[allow(clippy::type_complexity)]
    fn run(&mut self, batch: &[Request]) -> Result<Vec<Result<Vec<Value>, CmdError>>, CmdError> {
        let storage = |e: &dyn std::fmt::Display| CmdError::new("STORAGE", e.to_string());
        let txn = self.db.begin_write().map_err(|e| storage(&e))?;
        let mut next_id = self.next_id;
        let (replies, dirty) = {
            let meta = txn.open_table(META).map_err(|e| storage(&e))?;
            let data = txn.open_table(DATA).map_err(|e| storage(&e))?;
            let mut tx = Tx::new(meta, data, &mut next_id);
            let mut replies = Vec::with_capacity(batch.len());
            for req in batch {
                let mut values = Vec::with_capacity(req.commands.len());
                let mut failed = None;
                for cmd in &req.commands {
                    match self.command(&mut tx, cmd) {
                        Ok(v) => values.push(v),
                        // The store itself failed: the whole batch is dropped.
                        Err(e) if e.code == "STORAGE" => return Err(e),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                replies.push(match failed {
                    Some(e) => Err(e),
                    None => Ok(values),
                });
            }
            (replies, tx.dirty)
        };
        if dirty {
            if next_id != self.next_id {
                let mut sys = txn.open_table(SYS).map_err(|e| storage(&e))?;
                sys.insert("next_id", &next_id.to_be_bytes()[..])
                    .map_err(|e| storage(&e))?;
            }
            txn.commit().map_err(|e| storage(&e))?;
            self.next_id = next_id;
        } else {
            txn.abort().map_err(|e| storage(&e))?;
        }
        Ok(replies)
    }

    fn command(&mut self, tx: &mut Tx<'_>, cmd: &[Vec<u8>]) -> store::Reply {
        let name = cmd
            .first()
            .map(|n| String::from_utf8_lossy(n).to_ascii_uppercase())
            .unwrap_or_default();
        match name.as_str() {
            "EVALSHA" => self.lua.eval(tx, &cmd[1..]),
            "EVAL" => {
                let code = cmd
                    .get(1)
                    .ok_or_else(|| CmdError::new("ERR", "no script"))?;
                let sha = self.lua.load(code)?;
                let mut rest = vec![sha.into_bytes()];
                rest.extend_from_slice(&cmd[2..]);
                self.lua.eval(tx, &rest)
            }
            "SCRIPT" if cmd.len() == 3 && cmd[1].eq_ignore_ascii_case(b"LOAD") => {
                Ok(Value::BulkString(self.lua.load(&cmd[2])?.into_bytes()))
            }
            "SCAN" | "HSCAN" => self.scan(tx, name == "HSCAN", &cmd[1..]),
            _ => tx.exec(cmd),
        }
    }

    /// `SCAN cursor [MATCH p] [COUNT n]` and `HSCAN key cursor [MATCH p] [COUNT n]`.
    fn scan(&mut self, tx: &mut Tx<'_>, hash: bool, a: &[Vec<u8>]) -> store::Reply {
        let syntax = || CmdError::new("ERR", "syntax error");
        let (key, rest) = if hash {
            let (k, r) = a.split_first().ok_or_else(syntax)?;
            (Some(k.as_slice()), r)
        } else {
            (None, a)
        };
        let (cursor, opts) = rest.split_first().ok_or_else(syntax)?;
        let cursor: u64 = std::str::from_utf8(cursor)
            .ok()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| CmdError::new("ERR", "invalid cursor"))?;
        let (mut pattern, mut count) = (None, 10usize);
        for pair in opts.chunks(2) {
            match (pair[0].to_ascii_uppercase().as_slice(), pair.get(1)) {
                (b"MATCH", Some(p)) => pattern = Some(p.as_slice()),
                (b"COUNT", Some(n)) => {
                    count = std::str::from_utf8(n)
                        .ok()
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n > 0)
                        .ok_or_else(syntax)?;
                }
                _ => return Err(syntax()),
            }
        }
        let after = match cursor {
            0 => None,
            c => Some(
                self.cursors
                    .remove(&c)
                    .ok_or_else(|| CmdError::new("ERR", "invalid cursor"))?,
            ),
        };
        let (items, last) = tx.scan(key, after.as_deref(), pattern, count)?;
        let next = match last {
            Some(last) => {
                let c = self.next_cursor;
                self.next_cursor += 1;
                self.cursors.insert(c, last);
                c
            }
            None => 0,
        };
        Ok(Value::Array(vec![
            Value::BulkString(next.to_string().into_bytes()),
            Value::Array(items),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Fields = Vec<Option<Vec<u8>>>;

    async fn hmget(db: &mut Embedded, key: &str, fields: &[&str]) -> Fields {
        redis::cmd("HMGET")
            .arg(key)
            .arg(fields)
            .query_async(db)
            .await
            .unwrap()
    }

    fn some(values: &[Option<&str>]) -> Fields {
        values
            .iter()
            .map(|v| v.map(|s| s.as_bytes().to_vec()))
            .collect()
    }

    /// HMGET answers from one read of a packed hash: each field asked, in the order asked,
    /// with nil for a field or a hash that is not there; the same once the hash is unpacked.
    #[tokio::test]
    async fn hmget_answers_every_field_of_a_packed_and_an_unpacked_hash_in_order() {
        let dir = std::env::temp_dir().join(format!(
            "ferry-hmget-{}-{}",
            std::process::id(),
            std::time::SystemTime::UNIX_EPOCH
                .elapsed()
                .unwrap()
                .as_nanos()
        ));
        let mut db = Embedded::open(&dir, &[]).unwrap();
        let _: () = redis::cmd("HSET")
            .arg("h")
            .arg(&[("b", "2"), ("a", "1"), ("c", "3")])
            .query_async(&mut db)
            .await
            .unwrap();
        let _: () = redis::cmd("HSET")
            .arg("h")
            .arg("a")
            .arg("one")
            .query_async(&mut db)
            .await
            .unwrap();
        let _: () = redis::cmd("HDEL")
            .arg("h")
            .arg("c")
            .query_async(&mut db)
            .await
            .unwrap();
        assert_eq!(
            hmget(&mut db, "h", &["c", "b", "zz", "a"]).await,
            some(&[None, Some("2"), None, Some("one")])
        );
        assert_eq!(
            hmget(&mut db, "nothing", &["a", "b"]).await,
            some(&[None, None])
        );

        // A value over the packed limit unpacks the hash into a row per field.
        let long = "v".repeat(store::PACKED_MAX_BYTES + 1);
        let _: () = redis::cmd("HSET")
            .arg("h")
            .arg("d")
            .arg(&long)
            .query_async(&mut db)
            .await
            .unwrap();
        assert_eq!(
            hmget(&mut db, "h", &["d", "a", "c"]).await,
            some(&[Some(long.as_str()), Some("one"), None])
        );
        drop(db);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
