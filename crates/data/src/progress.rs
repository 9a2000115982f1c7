//! Progress of long operations (an import, the demo generator, building the
//! Python runtime), as the library crates report it: stages, each with a
//! length when it is known, and the units done. Libraries draw nothing: the
//! binary implements [`Progress`] (a bar on a terminal), and [`NoProgress`]
//! drops every report (servers, tests).

use std::io::Read;

/// Receives the progress of one operation.
pub trait Progress {
    /// A stage begins: `message` says what is done (`importing trades.csv`);
    /// `total` is how many units it takes when known (rows, bytes), `None`
    /// when not (a spinner). The units done start again at 0.
    fn stage(&self, message: &str, total: Option<u64>);

    /// `n` more units of the current stage are done.
    fn advance(&self, n: u64);

    /// The operation is over (also after an error): whatever showed the
    /// progress goes away. The library's operations call it when they end.
    fn finish(&self) {}
}

/// Drops every report.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _message: &str, _total: Option<u64>) {}
    fn advance(&self, _n: u64) {}
}

/// A reader that reports the bytes read as units done.
pub(crate) struct ProgressRead<'a, R> {
    pub inner: R,
    pub progress: &'a dyn Progress,
}

impl<R: Read> Read for ProgressRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records every call.
    #[derive(Default)]
    struct Recorder(RefCell<Vec<String>>);

    impl Progress for Recorder {
        fn stage(&self, message: &str, total: Option<u64>) {
            self.0.borrow_mut().push(format!("{message} {total:?}"));
        }
        fn advance(&self, n: u64) {
            self.0.borrow_mut().push(format!("+{n}"));
        }
    }

    #[test]
    fn reads_are_counted_in_bytes() {
        let recorder = Recorder::default();
        recorder.stage("reading", Some(5));
        let mut reader = ProgressRead {
            inner: &b"hello"[..],
            progress: &recorder,
        };
        let mut out = String::new();
        reader.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello");
        let calls = recorder.0.borrow();
        assert_eq!(calls.first().map(String::as_str), Some("reading Some(5)"));
        let total: u64 = calls[1..]
            .iter()
            .map(|c| c.trim_start_matches('+').parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, 5);
        NoProgress.stage("nothing", None);
        NoProgress.advance(1);
        NoProgress.finish();
    }
}
