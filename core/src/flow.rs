//! Adaptive flow control per prefix shard, across the whole fleet: the controller, as a pure
//! function of its state and an event.
//!
//! S3 throttles by prefix. A shard whose store answers SlowDown (or 429) has its allowed
//! concurrency, counted across every worker, cut multiplicatively; successes regrow it
//! additively. While the store keeps refusing, the shard is *probed*: one task at a time,
//! spaced by a backoff that doubles (1 s to 4 s), tests whether it has recovered. A probe
//! that succeeds ends probing; every success then adds one to the limit, and once the limit
//! is back to the concurrency the shard had when it was first throttled, it is unlimited
//! again. Other shards are never slowed.
//!
//! `claim.lua`, `ack.lua`, `throttle.lua` (and every script that ends a lease) apply the same
//! rules to the state Redis holds; `tests/flow_contract.rs` runs random event sequences
//! through both and compares them.

/// First wait before probing a shard that was throttled.
pub const FIRST_BACKOFF_MS: u64 = 1_000;
/// Longest wait between probes.
pub const MAX_BACKOFF_MS: u64 = 4_000;

/// One shard's flow state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// Tasks of the shard in flight now, fleet-wide.
    pub in_flight: u32,
    /// Allowed in flight; 0 = not throttled (unlimited).
    pub limit: u32,
    /// The concurrency to grow back to before the shard is unlimited again.
    pub ceiling: u32,
    /// Waiting for a probe to succeed before any other claim.
    pub probing: bool,
    /// A probe is in flight.
    pub probe_out: bool,
    /// When the next probe may be claimed (ms).
    pub next_probe_ms: u64,
    /// The wait after the next failed probe (ms).
    pub backoff_ms: u64,
    /// Throttle answers seen, in all.
    pub throttled: u64,
}

/// What may be claimed from a shard now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Anything: the shard is not throttled, or is under its limit.
    Yes,
    /// One task, as the probe.
    Probe,
    /// Nothing now.
    No,
}

/// What happened to one of the shard's tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A task was claimed (as the probe, or not).
    Claimed {
        /// Whether it was claimed as the probe.
        probe: bool,
    },
    /// A task succeeded (acked, or a part recorded): the store answers.
    Succeeded {
        /// Whether it was the probe.
        probe: bool,
    },
    /// A task was refused with SlowDown or 429.
    Throttled {
        /// Whether it was the probe.
        probe: bool,
    },
    /// A task ended otherwise (failed, released, lease expired): nothing learned.
    Ended {
        /// Whether it was the probe.
        probe: bool,
    },
}

impl Flow {
    /// Whether the shard is throttled now.
    pub fn throttled(&self) -> bool {
        self.limit > 0
    }

    /// What may be claimed at `now_ms`.
    pub fn admit(&self, now_ms: u64) -> Admit {
        if !self.throttled() {
            Admit::Yes
        } else if self.probing {
            if !self.probe_out && now_ms >= self.next_probe_ms {
                Admit::Probe
            } else {
                Admit::No
            }
        } else if self.in_flight < self.limit {
            Admit::Yes
        } else {
            Admit::No
        }
    }

    /// The state after `event` at `now_ms`.
    pub fn on(self, event: Event, now_ms: u64) -> Flow {
        let mut f = self;
        match event {
            Event::Claimed { probe } => {
                f.in_flight += 1;
                if probe {
                    f.probe_out = true;
                }
            }
            Event::Succeeded { probe } => {
                f.in_flight = f.in_flight.saturating_sub(1);
                if probe {
                    f.probe_out = false;
                    f.probing = false;
                    f.backoff_ms = FIRST_BACKOFF_MS;
                }
                if f.throttled() && !f.probing {
                    f.limit += 1;
                    if f.limit >= f.ceiling {
                        f = Flow {
                            in_flight: f.in_flight,
                            throttled: f.throttled,
                            ..Flow::default()
                        };
                    }
                }
            }
            Event::Throttled { probe } => {
                let before = f.in_flight;
                f.in_flight = f.in_flight.saturating_sub(1);
                f.throttled += 1;
                if probe {
                    f.probe_out = false;
                }
                // One cut per episode: the answers of tasks already in flight when the first
                // one came do not cut again. A failed probe does, and waits longer.
                if !f.throttled() {
                    f.ceiling = before.max(1);
                    f.limit = (before / 2).max(1);
                    f.backoff_ms = FIRST_BACKOFF_MS;
                    f.probing = true;
                    f.next_probe_ms = now_ms + f.backoff_ms;
                } else if probe || !f.probing {
                    f.limit = (f.limit / 2).max(1);
                    if f.probing {
                        f.backoff_ms = (f.backoff_ms * 2).min(MAX_BACKOFF_MS);
                    } else {
                        f.backoff_ms = FIRST_BACKOFF_MS;
                        f.probing = true;
                    }
                    f.next_probe_ms = now_ms + f.backoff_ms;
                }
            }
            Event::Ended { probe } => {
                f.in_flight = f.in_flight.saturating_sub(1);
                if probe {
                    // Nothing learned: the next probe may go at once.
                    f.probe_out = false;
                }
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event() -> impl Strategy<Value = (u8, bool, u64)> {
        (0u8..4, any::<bool>(), 0u64..3_000)
    }

    /// Applies an event if it is possible in the state: a task that ends is the probe only if
    /// one is out, and must be when no other task is in flight.
    fn step(f: Flow, (kind, probe, dt): (u8, bool, u64), now: &mut u64) -> Flow {
        *now += dt;
        let others = f.in_flight - u32::from(f.probe_out);
        let probe = f.probe_out && (probe || others == 0);
        match kind {
            0 => match f.admit(*now) {
                Admit::Yes => f.on(Event::Claimed { probe: false }, *now),
                Admit::Probe => f.on(Event::Claimed { probe: true }, *now),
                Admit::No => f,
            },
            _ if f.in_flight == 0 => f,
            1 => f.on(Event::Succeeded { probe }, *now),
            2 => f.on(Event::Throttled { probe }, *now),
            _ => f.on(Event::Ended { probe }, *now),
        }
    }

    proptest! {
        #[test]
        fn the_limit_stays_within_its_bounds(events in proptest::collection::vec(event(), 0..300)) {
            let (mut f, mut now) = (Flow::default(), 0);
            for e in events {
                f = step(f, e, &mut now);
                if f.throttled() {
                    prop_assert!(f.limit >= 1 && f.limit < f.ceiling.max(2), "{f:?}");
                    prop_assert!(f.backoff_ms >= FIRST_BACKOFF_MS && f.backoff_ms <= MAX_BACKOFF_MS);
                } else {
                    prop_assert!(!f.probing && !f.probe_out);
                }
            }
        }

        #[test]
        fn a_throttle_never_raises_the_limit(events in proptest::collection::vec(event(), 0..300), probe: bool) {
            let (mut f, mut now) = (Flow::default(), 0);
            for e in events {
                f = step(f, e, &mut now);
            }
            f.in_flight += 1;
            let probe = probe && f.probe_out;
            let after = f.on(Event::Throttled { probe }, now);
            let _ = &mut f;
            prop_assert!(after.throttled());
            if f.throttled() {
                prop_assert!(after.limit <= f.limit, "{f:?} -> {after:?}");
            } else {
                prop_assert!(after.limit <= f.in_flight.max(1));
            }
        }

        #[test]
        fn successes_after_a_throttle_recover_full_speed_in_bounded_steps(
            events in proptest::collection::vec(event(), 0..300)
        ) {
            let (mut f, mut now) = (Flow::default(), 0);
            for e in events {
                f = step(f, e, &mut now);
            }
            // The store answers again: probe, then succeed, each claimed task at once.
            let bound = f.ceiling as usize + 2;
            let mut steps = 0;
            while f.throttled() {
                now += MAX_BACKOFF_MS;
                f = match f.admit(now) {
                    Admit::Probe => f.on(Event::Claimed { probe: true }, now),
                    Admit::Yes => f.on(Event::Claimed { probe: false }, now),
                    Admit::No => f,
                };
                // Every task in flight succeeds, the probe among them.
                while f.in_flight > 0 {
                    let probe = f.probe_out;
                    f = f.on(Event::Succeeded { probe }, now);
                }
                steps += 1;
                prop_assert!(steps <= bound, "not recovered after {steps} steps: {f:?}");
            }
        }
    }

    #[test]
    fn one_episode_cuts_once_then_probes_with_a_growing_wait() {
        let mut f = Flow::default();
        for _ in 0..16 {
            f = f.on(Event::Claimed { probe: false }, 0);
        }
        // Every task in flight is refused: one cut.
        for _ in 0..16 {
            f = f.on(Event::Throttled { probe: false }, 10);
        }
        assert_eq!((f.limit, f.ceiling, f.in_flight), (8, 16, 0));
        assert_eq!(f.admit(500), Admit::No);
        assert_eq!(f.admit(1_010), Admit::Probe);
        f = f.on(Event::Claimed { probe: true }, 1_010);
        assert_eq!(f.admit(1_010), Admit::No, "one probe at a time");
        f = f.on(Event::Throttled { probe: true }, 1_050);
        assert_eq!((f.limit, f.next_probe_ms), (4, 3_050));
        f = f.on(Event::Claimed { probe: true }, 3_050);
        f = f.on(Event::Succeeded { probe: true }, 3_100);
        assert!(!f.probing);
        assert_eq!(f.limit, 5);
        assert_eq!(f.admit(3_100), Admit::Yes);
    }
}
