//! The progress the library crates report ([`tradebox_data::progress::Progress`]:
//! imports, demo data, building the Python runtime, starting the pool),
//! drawn with indicatif on stderr: a bar for a stage of known length, a
//! spinner otherwise. When stderr is not a terminal (a log file, systemd,
//! CI), a stage still running after a second is announced with a plain
//! line, and its end with another, so a long set-up never looks hung while
//! quick stages print nothing; `--quiet` hides both. Library crates never
//! draw.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tradebox_data::progress::Progress;

const BAR: &str = "{msg} [{bar:30}] {percent:>3}% {elapsed} eta {eta}";
const SPINNER: &str = "{spinner} {msg} [{elapsed}]";

/// How long a stage runs before a plain line announces it.
const ANNOUNCE_AFTER: Duration = Duration::from_secs(1);

/// A progress bar on stderr; cleared when finished or dropped.
pub struct Terminal {
    bar: ProgressBar,
    /// Plain lines, when stderr is not a terminal.
    lines: Option<Arc<Mutex<Lines>>>,
}

/// The plain-line form: "<stage> ..." once the stage has run for
/// [`ANNOUNCE_AFTER`], "<stage>: 12.3 s" when it ends (only if announced).
struct Lines {
    out: Box<dyn Write + Send>,
    current: Option<(String, Instant, bool)>,
    after: Duration,
    stopped: bool,
}

impl Lines {
    fn announce_if_due(&mut self) {
        if let Some((message, started, announced @ false)) = &mut self.current {
            if started.elapsed() >= self.after {
                *announced = true;
                let _ = writeln!(self.out, "{message} ...");
            }
        }
    }

    fn end_stage(&mut self) {
        if let Some((message, started, true)) = self.current.take() {
            let took = started.elapsed().as_secs_f64();
            let _ = writeln!(self.out, "{message}: {took:.1} s");
        }
    }
}

impl Terminal {
    /// Shows nothing until the first stage; never shows anything when
    /// `quiet`.
    pub fn new(quiet: bool) -> Terminal {
        if quiet {
            Terminal::with_lines(ProgressBar::hidden(), None, ANNOUNCE_AFTER)
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            Terminal::with_lines(bar, None, ANNOUNCE_AFTER)
        } else {
            let out: Box<dyn Write + Send> = Box::new(std::io::stderr());
            Terminal::with_lines(ProgressBar::hidden(), Some(out), ANNOUNCE_AFTER)
        }
    }

    /// With plain lines to `out` (announced after `after`), watched by a
    /// thread that ends when the terminal is dropped.
    fn with_lines(
        bar: ProgressBar,
        out: Option<Box<dyn Write + Send>>,
        after: Duration,
    ) -> Terminal {
        let lines = out.map(|out| {
            let lines = Arc::new(Mutex::new(Lines {
                out,
                current: None,
                after,
                stopped: false,
            }));
            let watched = Arc::clone(&lines);
            let tick = (after / 5).max(Duration::from_millis(10));
            std::thread::spawn(move || loop {
                std::thread::sleep(tick);
                let Ok(mut lines) = watched.lock() else {
                    return;
                };
                if lines.stopped {
                    return;
                }
                lines.announce_if_due();
            });
            lines
        });
        Terminal { bar, lines }
    }

    fn with_plain(&self, f: impl FnOnce(&mut Lines)) {
        if let Some(Ok(mut lines)) = self.lines.as_ref().map(|l| l.lock()) {
            f(&mut lines);
        }
    }
}

impl Progress for Terminal {
    fn stage(&self, message: &str, total: Option<u64>) {
        self.with_plain(|lines| {
            lines.end_stage();
            lines.current = Some((message.to_owned(), Instant::now(), false));
        });
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
        self.with_plain(Lines::end_stage);
        self.bar.disable_steady_tick();
        self.bar.finish_and_clear();
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.finish();
        self.with_plain(|lines| lines.stopped = true);
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

    /// A writer whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn without_a_terminal_only_stages_that_take_a_while_are_lines() {
        let out = Shared::default();
        let after = Duration::from_millis(150);
        let progress =
            Terminal::with_lines(ProgressBar::hidden(), Some(Box::new(out.clone())), after);
        progress.stage("quick", None);
        progress.stage("python runtime: creating the venv", None);
        std::thread::sleep(after * 4);
        assert_eq!(
            out.text(),
            "python runtime: creating the venv ...\n",
            "announced once"
        );
        progress.stage("importing a.csv", Some(10));
        progress.advance(10); // no line per unit
        progress.finish();
        drop(progress);
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[1].starts_with("python runtime: creating the venv: "),
            "{text}"
        );
        assert!(lines[1].ends_with(" s"), "{text}");
    }
}
