//! The progress display: a bar on a terminal, a line every few seconds otherwise, nothing
//! with `--json` or `-q`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use ferry_queue::Queue;

use super::SyncArgs;
use crate::human::bytes;

/// How progress is shown.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Display {
    /// A bar redrawn in place (stderr is a terminal).
    Bar,
    /// A line every few seconds (stderr is a file or pipe).
    Lines,
    None,
}

impl Display {
    pub(super) fn choose(args: &SyncArgs) -> Display {
        if args.no_progress || args.json {
            Display::None
        } else if std::io::stderr().is_terminal() {
            Display::Bar
        } else {
            Display::Lines
        }
    }
}

/// Between plain progress lines.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// Shows the current iteration's progress until `stop`: objects and bytes done of those
/// planned so far, rate, ETA.
pub(super) async fn show_progress(
    queue: Queue,
    rule: String,
    first: u64,
    display: Display,
    stop: tokio_util::sync::CancellationToken,
) {
    if display == Display::None {
        return;
    }
    let bar = (display == Display::Bar).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let started = Instant::now();
    let mut last_line = Instant::now();
    loop {
        let record = queue.latest_iteration(&rule).await.ok().flatten();
        if let Some(r) = record.filter(|r| r.number >= first) {
            let done_bytes = r.copied_bytes;
            let objects = format!(
                "{}/{} objects{}",
                r.done + r.dead,
                r.planned,
                if r.sealed { "" } else { " (listing)" }
            );
            match &bar {
                Some(bar) => {
                    bar.set_length(r.planned_bytes.max(done_bytes));
                    bar.set_position(done_bytes);
                    bar.set_message(format!("iteration {} {objects}", r.number));
                }
                None if last_line.elapsed() >= LINE_EVERY => {
                    last_line = Instant::now();
                    let secs = started.elapsed().as_secs_f64().max(0.001);
                    eprintln!(
                        "progress: iteration {}, {objects}, {} of {} copied, {:.0} objects/s",
                        r.number,
                        bytes(done_bytes),
                        bytes(r.planned_bytes),
                        r.done as f64 / secs
                    );
                }
                None => {}
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.cancelled() => break,
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
