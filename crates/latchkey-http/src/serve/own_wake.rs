//! A future that is polled only after it woke its task itself. A connection's task waits on
//! two futures at once: hyper's connection, which wakes it for every request, and the
//! connection's expiry (a timer and a notification), which almost never fires. `select!` polls
//! both on every wake-up (the timer's and the notification's registrations checked: with the
//! select's own work, ~300 instructions per request); polled through [`OwnWake`], the expiry
//! is polled again only when its own timer or notification woke the task.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// A future, with the waker it is polled with: waking that waker marks the future as due and
/// wakes the task that last polled it.
pub struct OwnWake<F> {
    future: F,
    signal: Arc<Signal>,
    waker: Waker,
}

struct Signal {
    /// Set when the future's waker was woken (and at first, so it is polled once).
    due: AtomicBool,
    /// The task polling [`OwnWake`].
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.due.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future + Unpin> OwnWake<F> {
    pub fn new(future: F) -> Self {
        let signal = Arc::new(Signal {
            due: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            future,
            waker: Waker::from(signal.clone()),
            signal,
        }
    }

    /// Polls the future if it woke the task since it was last polled (or was never polled);
    /// else `Pending` at the cost of one load.
    pub fn poll_if_due(&mut self, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.signal.due.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // The task first, then the flag down: a wake from here on finds both.
        self.signal.task.register(cx.waker());
        self.signal.due.store(false, Ordering::Release);
        Pin::new(&mut self.future).poll(&mut Context::from_waker(&self.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Never ready: counts its polls and keeps the waker of the last one.
    struct Counted {
        polls: Arc<AtomicUsize>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Counted {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn the_future_is_polled_first_and_then_only_after_it_woke_the_task() {
        let polls = Arc::new(AtomicUsize::new(0));
        let inner_waker = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let mut own = OwnWake::new(Counted {
            polls: polls.clone(),
            waker: inner_waker.clone(),
        });
        let task_wakes = Arc::new(TaskWakes(AtomicUsize::new(0)));
        let task = Waker::from(task_wakes.clone());
        let mut cx = Context::from_waker(&task);

        assert!(own.poll_if_due(&mut cx).is_pending());
        assert!(own.poll_if_due(&mut cx).is_pending());
        assert!(own.poll_if_due(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled once until it woke");
        assert_eq!(task_wakes.0.load(Ordering::SeqCst), 0);

        let woken = inner_waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        woken.into_iter().for_each(Waker::wake);
        assert_eq!(
            task_wakes.0.load(Ordering::SeqCst),
            1,
            "its wake woke the task"
        );
        assert!(own.poll_if_due(&mut cx).is_pending());
        assert!(own.poll_if_due(&mut cx).is_pending());
        assert_eq!(
            polls.load(Ordering::SeqCst),
            2,
            "polled once more after its wake"
        );
    }

    struct TaskWakes(AtomicUsize);

    impl Wake for TaskWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_polled_only_when_due_fires_on_time_beside_a_future_woken_often() {
        let start = tokio::time::Instant::now();
        let mut timer = OwnWake::new(Box::pin(tokio::time::sleep(Duration::from_secs(5))));
        // Wakes the task every 100 ms for 100 s.
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        let mut busy = Box::pin(async move {
            for _ in 0..1_000 {
                ticks.tick().await;
            }
        });
        let fired = std::future::poll_fn(|cx| {
            if busy.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            timer.poll_if_due(cx).map(|()| true)
        })
        .await;
        assert!(
            fired,
            "the timer fired while the other future was still busy"
        );
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }
}
