//! Which idle slot of the pool takes the next job: the one idle longest.
//!
//! After each job a zygote kills its child and forks the next, which then
//! warms up for 10-20 ms of CPU (see python/tradebox/zygote.py). With every
//! slot waiting on the shared queue, whichever thread the channel woke took
//! the job, and in `perf sched` traces that was mostly the slot that had
//! just finished one (runs of 10-15 jobs on one slot, 20 ms apart, while the
//! other two idled): each job found a child still warming up, beside the
//! last job's teardown and fork. Here only the slot at the front of a line
//! of idle slots waits on the queue; a slot joins the line at its back when
//! it has reset after a job, and leaves it from the front when it takes one,
//! handing the front on. So jobs go round the slots, each to the child that
//! has had the longest to warm up.
//!
//! Slots behind the front sleep (parked) and wake every tick for their
//! other duties, keeping their place. The front slot is the queue's only
//! receiver: a job waits for no hand-over unless two come at once, and a
//! slot that stops (the queue closed, or a panic) leaves the line and
//! hands the front on as it goes.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

/// The line of idle slots; see the module documentation.
pub(crate) struct Turns {
    line: Mutex<VecDeque<usize>>,
    threads: Vec<OnceLock<Thread>>,
}

/// What waiting for a turn gave.
pub(crate) enum Turn<T> {
    /// A job: this slot has left the line, and must [`Turns::rejoin`]
    /// once it has reset after the job.
    Job(T),
    /// Nothing within the tick (this slot is still in line).
    Tick,
    /// The queue is closed: this slot has left the line for good.
    Closed,
}

impl Turns {
    /// A line of `size` slots, slot 0 at the front.
    pub(crate) fn new(size: usize) -> Turns {
        Turns {
            line: Mutex::new((0..size).collect()),
            threads: (0..size).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Called once by slot `i`'s own thread, before it waits for a turn:
    /// the hand-over wakes it from then on, and the guard returned takes
    /// it out of the line when the thread ends.
    pub(crate) fn enter(&self, i: usize) -> Leaving<'_> {
        let _ = self.threads[i].set(std::thread::current());
        Leaving {
            turns: self,
            slot: i,
        }
    }

    fn front(&self) -> Option<usize> {
        self.line.lock().ok().and_then(|l| l.front().copied())
    }

    /// Waits up to `tick` for a job on `rx` if slot `i` is at the front of
    /// the line, else for its turn (and then no more than `tick` in all).
    pub(crate) fn wait<T>(&self, i: usize, rx: &Receiver<T>, tick: Duration) -> Turn<T> {
        let started = std::time::Instant::now();
        if self.front() != Some(i) {
            std::thread::park_timeout(tick);
            if self.front() != Some(i) {
                return Turn::Tick;
            }
        }
        let left = tick.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(work) => {
                self.leave(i);
                Turn::Job(work)
            }
            Err(RecvTimeoutError::Timeout) => Turn::Tick,
            Err(RecvTimeoutError::Disconnected) => {
                self.leave(i);
                Turn::Closed
            }
        }
    }

    /// Slot `i` leaves the line (wherever it is), and the slot then at the
    /// front is woken to wait on the queue; whether `i` was in line.
    pub(crate) fn leave(&self, i: usize) -> bool {
        let (was, front) = match self.line.lock() {
            Ok(mut line) => {
                let before = line.len();
                line.retain(|&s| s != i);
                (line.len() < before, line.front().copied())
            }
            Err(_) => (false, None),
        };
        if let Some(t) = front.and_then(|f| self.threads.get(f)?.get()) {
            t.unpark();
        }
        was
    }

    /// Runs `f`, slow work of slot `i` between jobs (a zygote moving to a
    /// new snapshot version, or started anew), with `i` out of the line
    /// meanwhile if it was in it, so that jobs go to the other slots;
    /// it then goes to the back, behind the slots that kept serving.
    pub(crate) fn aside<T>(&self, i: usize, f: impl FnOnce() -> T) -> T {
        let was = self.leave(i);
        let value = f();
        if was {
            self.rejoin(i);
        }
        value
    }

    /// Slot `i`, reset after a job, goes to the back of the line.
    pub(crate) fn rejoin(&self, i: usize) {
        if let Ok(mut line) = self.line.lock() {
            if !line.contains(&i) {
                line.push_back(i);
            }
        }
    }
}

/// Takes slot `i` out of the line when its thread ends, however it ends
/// (a panic included), so the slots behind it are not left waiting.
pub(crate) struct Leaving<'a> {
    turns: &'a Turns,
    slot: usize,
}

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        let _ = self.turns.leave(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const TICK: Duration = Duration::from_millis(25);

    #[test]
    fn only_the_front_slot_takes_a_job_and_the_taker_goes_to_the_back() {
        let turns = Turns::new(3);
        let (tx, rx) = crossbeam_channel::unbounded();
        tx.send(1).unwrap();
        // Slot 1 is not at the front: it leaves the job in the queue.
        assert!(matches!(turns.wait(1, &rx, TICK), Turn::Tick));
        assert_eq!(rx.len(), 1);
        assert!(matches!(turns.wait(0, &rx, TICK), Turn::Job(1)));
        turns.rejoin(0);
        tx.send(2).unwrap();
        tx.send(3).unwrap();
        assert!(matches!(turns.wait(0, &rx, TICK), Turn::Tick));
        assert!(matches!(turns.wait(1, &rx, TICK), Turn::Job(2)));
        assert!(matches!(turns.wait(2, &rx, TICK), Turn::Job(3)));
        turns.rejoin(2);
        turns.rejoin(1);
        assert_eq!(*turns.line.lock().unwrap(), [0, 2, 1]);
    }

    #[test]
    fn a_slot_in_line_keeps_its_place_across_ticks() {
        let turns = Turns::new(2);
        let (_tx, rx) = crossbeam_channel::unbounded::<u8>();
        for _ in 0..3 {
            assert!(matches!(turns.wait(1, &rx, Duration::ZERO), Turn::Tick));
            assert!(matches!(turns.wait(0, &rx, Duration::ZERO), Turn::Tick));
        }
        assert_eq!(*turns.line.lock().unwrap(), [0, 1]);
    }

    #[test]
    fn the_next_slot_is_woken_when_the_front_takes_a_job() {
        let turns = Arc::new(Turns::new(2));
        let (tx, rx) = crossbeam_channel::unbounded::<u8>();
        let (got_tx, got_rx) = crossbeam_channel::unbounded();
        let hour = Duration::from_secs(3600);
        let behind = {
            let (turns, rx) = (Arc::clone(&turns), rx.clone());
            std::thread::spawn(move || {
                let _entered = turns.enter(1);
                // Parked for up to an hour unless the front hands over.
                loop {
                    if let Turn::Job(j) = turns.wait(1, &rx, hour) {
                        got_tx.send(j).unwrap();
                        return;
                    }
                }
            })
        };
        tx.send(7).unwrap();
        assert!(matches!(turns.wait(0, &rx, TICK), Turn::Job(7)));
        tx.send(8).unwrap();
        assert_eq!(got_rx.recv_timeout(Duration::from_secs(60)), Ok(8));
        behind.join().unwrap();
    }

    #[test]
    fn a_slot_at_slow_work_lets_the_others_take_jobs_then_goes_to_the_back() {
        let turns = Turns::new(3);
        let (tx, rx) = crossbeam_channel::unbounded();
        tx.send(1).unwrap();
        let taken = turns.aside(0, || match turns.wait(1, &rx, TICK) {
            Turn::Job(j) => j,
            _ => panic!("slot 1 is at the front while slot 0 is aside"),
        });
        assert_eq!(taken, 1);
        assert_eq!(*turns.line.lock().unwrap(), [2, 0]);
        // A slot out of line (running a job) stays out of it.
        turns.aside(1, || ());
        assert_eq!(*turns.line.lock().unwrap(), [2, 0]);
    }

    #[test]
    fn a_slot_that_ends_hands_the_front_on() {
        let turns = Turns::new(3);
        let (tx, rx) = crossbeam_channel::unbounded();
        drop(turns.enter(0));
        tx.send(1).unwrap();
        assert!(matches!(turns.wait(1, &rx, TICK), Turn::Job(1)));
        drop(tx);
        assert!(matches!(turns.wait(2, &rx, TICK), Turn::Closed));
        assert!(turns.line.lock().unwrap().is_empty());
    }
}
