//! The Lua scripts, loaded once per process.

use super::*;

pub(crate) struct Scripts {
    pub(crate) plan: Script,
    pub(crate) event: Script,
    pub(crate) claim: Script,
    pub(crate) renew: Script,
    pub(crate) ack: Script,
    pub(crate) ack_many: Script,
    pub(crate) fail: Script,
    pub(crate) release: Script,
    pub(crate) leader: Script,
    pub(crate) upload: Script,
    pub(crate) replace: Script,
    pub(crate) part: Script,
    pub(crate) heartbeat: Script,
    pub(crate) dead: Script,
    pub(crate) prune: Script,
    pub(crate) begin: Script,
    pub(crate) seal: Script,
    pub(crate) ranges: Script,
    pub(crate) marks: Script,
    pub(crate) finish: Script,
    pub(crate) rule: Script,
    pub(crate) throttle: Script,
    pub(crate) tokens: Script,
    pub(crate) ledger: Script,
    pub(crate) report: Script,
    pub(crate) version: Script,
    /// Every script's code, for a backend that must know them up front (the embedded one).
    pub(crate) sources: Vec<String>,
}

impl Scripts {
    pub(crate) fn load() -> Self {
        // The task scripts share the helpers of lib.lua (fencing check, finishing a task).
        // `true`: prefixed with lib.lua. Every code is kept for the embedded backend.
        let mut sources = Vec::new();
        let mut script = |with_lib: bool, body: &str| {
            let lib = if with_lib {
                include_str!("lua/lib.lua")
            } else {
                ""
            };
            let code = format!("{lib}{body}");
            let s = Script::new(&code);
            sources.push(code);
            s
        };
        let mut scripts = Scripts {
            plan: script(true, include_str!("lua/plan.lua")),
            event: script(true, include_str!("lua/event.lua")),
            claim: script(true, include_str!("lua/claim.lua")),
            renew: script(true, include_str!("lua/renew.lua")),
            ack: script(true, include_str!("lua/ack.lua")),
            ack_many: script(true, include_str!("lua/ack_many.lua")),
            fail: script(true, include_str!("lua/fail.lua")),
            release: script(true, include_str!("lua/release.lua")),
            leader: script(false, include_str!("lua/leader.lua")),
            upload: script(true, include_str!("lua/upload.lua")),
            replace: script(true, include_str!("lua/replace.lua")),
            part: script(true, include_str!("lua/part.lua")),
            heartbeat: script(false, include_str!("lua/heartbeat.lua")),
            dead: script(true, include_str!("lua/dead.lua")),
            prune: script(true, include_str!("lua/prune.lua")),
            begin: script(true, include_str!("lua/begin.lua")),
            seal: script(true, include_str!("lua/seal.lua")),
            ranges: script(true, include_str!("lua/ranges.lua")),
            marks: script(true, include_str!("lua/marks.lua")),
            finish: script(true, include_str!("lua/finish.lua")),
            rule: script(true, include_str!("lua/rule.lua")),
            throttle: script(true, include_str!("lua/throttle.lua")),
            tokens: script(false, include_str!("lua/tokens.lua")),
            ledger: script(true, include_str!("lua/ledger.lua")),
            report: script(true, include_str!("lua/report.lua")),
            version: script(true, include_str!("lua/version.lua")),
            sources: Vec::new(),
        };
        scripts.sources = sources;
        scripts
    }
}
