//! Progress of a long simulation on standard error: trials done and time
//! elapsed, redrawn on one line at most five times a second, for a person
//! at a terminal (never in a pipe or a file unless asked for).

use std::io::Write;
use std::time::{Duration, Instant};

/// When to show progress (`--progress`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum When {
    /// When standard error is a terminal.
    #[default]
    Auto,
    Always,
    Never,
}

impl When {
    pub fn enabled(self, stderr_is_terminal: bool) -> bool {
        match self {
            When::Auto => stderr_is_terminal,
            When::Always => true,
            When::Never => false,
        }
    }
}

const EVERY: Duration = Duration::from_millis(200);

pub struct Progress {
    enabled: bool,
    total: usize,
    started: Instant,
    shown: Option<Instant>,
}

impl Progress {
    /// Progress over `total` trials (shown only for more than one).
    pub fn new(enabled: bool, total: usize) -> Self {
        Progress {
            enabled: enabled && total > 1,
            total,
            started: Instant::now(),
            shown: None,
        }
    }

    /// The line for `done` trials of `policy` after `elapsed`.
    pub fn line(policy: &str, done: usize, total: usize, elapsed: Duration) -> String {
        format!(
            "{policy}: trials {done}/{total} ({}%), {:.1}s elapsed",
            done * 100 / total.max(1),
            elapsed.as_secs_f64()
        )
    }

    /// `done` trials of `policy` are finished.
    pub fn tick(&mut self, policy: &str, done: usize) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if done < self.total && self.shown.is_some_and(|t| now - t < EVERY) {
            return;
        }
        self.shown = Some(now);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{}",
            Self::line(policy, done, self.total, now - self.started)
        );
        let _ = err.flush();
    }

    /// Leave the line for what comes next.
    pub fn finish(&mut self) {
        if self.enabled && self.shown.is_some() {
            let _ = writeln!(std::io::stderr());
        }
        self.shown = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_trials_done_and_time_elapsed() {
        assert_eq!(
            Progress::line("rollwise", 37, 200, Duration::from_millis(2150)),
            "rollwise: trials 37/200 (18%), 2.1s elapsed"
        );
        assert!(When::Auto.enabled(true) && !When::Auto.enabled(false));
        assert!(When::Always.enabled(false) && !When::Never.enabled(true));
    }
}
