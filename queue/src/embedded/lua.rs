//! Runs the queue's Lua scripts, unchanged, as Redis would: Lua 5.1, `KEYS` and `ARGV`,
//! `redis.call` on the embedded data, Redis's conversions between Lua and replies.
//!
//! A script runs inside the write transaction of its batch, alone (one thread serves the
//! store), so it is atomic exactly as in Redis: no other command runs between its calls.

use std::collections::HashMap;

use mlua::{Function, Lua, MultiValue, Table, Value as LuaValue};
use redis::Value;

use super::store::{CmdError, Reply, Tx};

/// The scripts, compiled once, by their SHA1 (as `EVALSHA` names them).
pub(super) struct Scripts {
    lua: Lua,
    by_sha: HashMap<String, Function>,
}

impl Scripts {
    /// A Lua state with every script in `codes` compiled.
    pub(super) fn with(codes: &[String]) -> Result<Scripts, String> {
        let mut scripts = Scripts::new().map_err(|e| e.to_string())?;
        for code in codes {
            scripts
                .load(code.as_bytes())
                .map_err(|e| format!("{} {}", e.code, e.detail))?;
        }
        Ok(scripts)
    }

    fn new() -> Result<Scripts, mlua::Error> {
        let lua = Lua::new();
        let redis = lua.create_table()?;
        redis.set(
            "error_reply",
            lua.create_function(|lua, msg: mlua::String| {
                let t = lua.create_table()?;
                t.set("err", msg)?;
                Ok(t)
            })?,
        )?;
        redis.set(
            "status_reply",
            lua.create_function(|lua, msg: mlua::String| {
                let t = lua.create_table()?;
                t.set("ok", msg)?;
                Ok(t)
            })?,
        )?;
        lua.globals().set("redis", redis)?;
        Ok(Scripts {
            lua,
            by_sha: HashMap::new(),
        })
    }

    /// Compiles `code` and returns its SHA1.
    pub(super) fn load(&mut self, code: &[u8]) -> Result<String, CmdError> {
        let sha = redis::Script::new(&String::from_utf8_lossy(code))
            .get_hash()
            .to_string();
        if !self.by_sha.contains_key(&sha) {
            let f = self
                .lua
                .load(code)
                .set_name(format!("user_script:{sha}"))
                .into_function()
                .map_err(|e| CmdError::new("ERR", format!("compiling script: {e}")))?;
            self.by_sha.insert(sha.clone(), f);
        }
        Ok(sha)
    }

    /// `EVALSHA sha numkeys key... arg...`.
    pub(super) fn eval(&self, tx: &mut Tx<'_>, a: &[Vec<u8>]) -> Reply {
        let (Some(sha), Some(n)) = (a.first(), a.get(1)) else {
            return Err(CmdError::new(
                "ERR",
                "wrong number of arguments for 'evalsha'",
            ));
        };
        let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
        let Some(f) = self.by_sha.get(&sha) else {
            return Err(CmdError::new(
                "NOSCRIPT",
                "No matching script. Please use EVAL.",
            ));
        };
        let n: usize = std::str::from_utf8(n)
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|n| *n <= a.len() - 2)
            .ok_or_else(|| {
                CmdError::new("ERR", "Number of keys can't be greater than number of args")
            })?;
        let (keys, args) = a[2..].split_at(n);
        let mut run = || -> mlua::Result<Result<Value, CmdError>> {
            let globals = self.lua.globals();
            globals.set("KEYS", self.strings(keys)?)?;
            globals.set("ARGV", self.strings(args)?)?;
            let redis: Table = globals.get("redis")?;
            self.lua.scope(|scope| {
                let call = scope.create_function_mut(|lua, args: MultiValue| {
                    let mut cmd = Vec::with_capacity(args.len());
                    for v in args {
                        cmd.push(arg_bytes(&v)?);
                    }
                    match tx.exec(&cmd) {
                        Ok(v) => to_lua(lua, &v),
                        Err(e) => Err(mlua::Error::RuntimeError(format!(
                            "{} {}",
                            e.code, e.detail
                        ))),
                    }
                })?;
                redis.set("call", call)?;
                let out: LuaValue = f.call(())?;
                from_lua(&out)
            })
        };
        match run() {
            Ok(reply) => reply,
            Err(e) => Err(script_error(&e)),
        }
    }

    fn strings(&self, items: &[Vec<u8>]) -> mlua::Result<Table> {
        let t = self.lua.create_table_with_capacity(items.len(), 0)?;
        for (i, item) in items.iter().enumerate() {
            t.raw_set(i + 1, self.lua.create_string(item)?)?;
        }
        Ok(t)
    }
}

/// A Lua error as Redis reports it: a command's own error code passes through.
fn script_error(e: &mlua::Error) -> CmdError {
    let msg = match e {
        mlua::Error::CallbackError { cause, .. } => return script_error(cause),
        mlua::Error::RuntimeError(m) => m.clone(),
        other => other.to_string(),
    };
    match msg.split_once(' ') {
        Some((code, detail))
            if !code.is_empty() && code.chars().all(|c| c.is_ascii_uppercase()) =>
        {
            CmdError::new(code, detail)
        }
        _ => CmdError::new("ERR", format!("script: {msg}")),
    }
}

/// A `redis.call` argument: Redis takes strings and numbers (as Lua prints them).
fn arg_bytes(v: &LuaValue) -> mlua::Result<Vec<u8>> {
    match v {
        LuaValue::String(s) => Ok(s.as_bytes().to_vec()),
        LuaValue::Integer(i) => Ok(i.to_string().into_bytes()),
        LuaValue::Number(n) => Ok(lua_number(*n).into_bytes()),
        _ => Err(mlua::Error::RuntimeError(
            "ERR Lua redis lib command arguments must be strings or integers".into(),
        )),
    }
}

/// A number as Lua 5.1 prints it (`%.14g`), for the values scripts pass: integral ones
/// print without a fraction.
fn lua_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// A reply as Redis hands it to Lua.
fn to_lua(lua: &Lua, v: &Value) -> mlua::Result<LuaValue> {
    Ok(match v {
        Value::Nil => LuaValue::Boolean(false),
        Value::Int(i) => LuaValue::Number(*i as f64),
        Value::BulkString(b) => LuaValue::String(lua.create_string(b)?),
        Value::Okay => status(lua, "OK")?,
        Value::SimpleString(s) => status(lua, s)?,
        Value::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, item)?)?;
            }
            LuaValue::Table(t)
        }
        other => {
            return Err(mlua::Error::RuntimeError(format!(
                "ERR the embedded backend has no Lua form for {other:?}"
            )));
        }
    })
}

fn status(lua: &Lua, s: &str) -> mlua::Result<LuaValue> {
    let t = lua.create_table()?;
    t.set("ok", s)?;
    Ok(LuaValue::Table(t))
}

/// A script's return value as Redis replies with it.
fn from_lua(v: &LuaValue) -> mlua::Result<Result<Value, CmdError>> {
    Ok(Ok(match v {
        LuaValue::Nil | LuaValue::Boolean(false) => Value::Nil,
        LuaValue::Boolean(true) => Value::Int(1),
        LuaValue::Integer(i) => Value::Int(*i),
        LuaValue::Number(n) => Value::Int(*n as i64),
        LuaValue::String(s) => Value::BulkString(s.as_bytes().to_vec()),
        LuaValue::Table(t) => {
            if let Ok(LuaValue::String(e)) = t.raw_get::<LuaValue>("err") {
                let msg = e.to_string_lossy();
                return Ok(Err(match msg.split_once(' ') {
                    Some((code, detail)) => CmdError::new(code, detail),
                    None => CmdError::new(&msg, ""),
                }));
            }
            if let Ok(LuaValue::String(s)) = t.raw_get::<LuaValue>("ok") {
                return Ok(Ok(Value::SimpleString(s.to_string_lossy())));
            }
            let mut out = Vec::new();
            for i in 1.. {
                let item: LuaValue = t.raw_get(i)?;
                if item.is_nil() {
                    break;
                }
                match from_lua(&item)? {
                    Ok(v) => out.push(v),
                    Err(e) => return Ok(Err(e)),
                }
            }
            Value::Array(out)
        }
        _ => Value::Nil,
    }))
}
