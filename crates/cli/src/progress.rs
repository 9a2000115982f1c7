//! The progress the library crates report ([`tradebox_data::progress::Progress`]:
//! imports, demo data, building the Python runtime, starting the pool),
//! drawn with indicatif on stderr: a bar for a stage of known length, a
//! spinner otherwise. indicatif draws nothing when stderr is not a
//! terminal; `--quiet` hides it everywhere. Library crates never draw.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tradebox_data::progress::Progress;

const BAR: &str = "{msg} [{bar:30}] {percent:>3}% {elapsed} eta {eta}";
const SPINNER: &str = "{spinner} {msg} [{elapsed}]";

/// A progress bar on stderr; cleared when finished or dropped.
pub struct Terminal {
    bar: ProgressBar,
}

impl Terminal {
    /// Shows nothing until the first stage; never shows anything when
    /// `quiet`.
    pub fn new(quiet: bool) -> Terminal {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        };
        Terminal { bar }
    }
}

impl Progress for Terminal {
    fn stage(&self, message: &str, total: Option<u64>) {
        // The style and message first: every later call may draw.
        let (template, tick) = match total {
            Some(_) => (BAR, Duration::from_millis(200)),
            None => (SPINNER, Duration::from_millis(120)),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            self.bar.set_style(style.progress_chars("=> "));
        }
        self.bar.set_message(message.to_owned());
        match total {
            Some(total) => {
                self.bar.set_length(total);
                self.bar.reset();
            }
            None => self.bar.unset_length(),
        }
        self.bar.enable_steady_tick(tick);
    }

    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    fn finish(&self) {
        self.bar.disable_steady_tick();
        self.bar.finish_and_clear();
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_set_the_length_and_count_units() {
        let progress = Terminal::new(true);
        progress.stage("importing a.csv", Some(10));
        progress.advance(4);
        progress.advance(3);
        assert_eq!(progress.bar.length(), Some(10));
        assert_eq!(progress.bar.position(), 7);
        progress.stage("importing b.csv", Some(5));
        assert_eq!(progress.bar.position(), 0, "a new stage starts at 0");
        progress.stage("python runtime: creating the venv", None);
        assert_eq!(progress.bar.length(), None);
        assert_eq!(progress.bar.message(), "python runtime: creating the venv");
        progress.finish();
        assert!(progress.bar.is_finished());
    }
}
