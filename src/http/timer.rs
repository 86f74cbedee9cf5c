//! hyper's timer for one HTTP connection. hyper arms a fresh header-read
//! deadline for every request head it waits for and drops it once the head
//! is in; with `hyper_util`'s `TokioTimer` each of those is a tokio timer
//! allocated, registered in the runtime's wheel and removed again, on every
//! keep-alive request. Here all deadlines of a connection share one tokio
//! timer, armed with the connection task's waker: a later deadline leaves
//! it as it is (it then wakes the task early, once, and is re-armed for the
//! deadline then current), so a request costs a clock read and a lock.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// One connection's timer (give each connection its own).
#[derive(Clone)]
pub struct ConnectionTimer(Arc<Mutex<Shared>>);

/// The connection's tokio timer and the waker it was last armed with.
struct Shared {
    sleep: Pin<Box<tokio::time::Sleep>>,
    waker: Option<Waker>,
}

impl ConnectionTimer {
    /// A timer not armed yet; call within the runtime.
    pub fn new() -> Self {
        // Armed at its first deadline; until then it never fires.
        let idle = tokio::time::sleep(Duration::from_secs(86_400 * 365));
        ConnectionTimer(Arc::new(Mutex::new(Shared {
            sleep: Box::pin(idle),
            waker: None,
        })))
    }
}

impl hyper::rt::Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Deadline {
            at: deadline,
            timer: self.0.clone(),
        })
    }
}

/// A deadline on the connection's timer: ready once `at` has passed.
struct Deadline {
    at: Instant,
    timer: Arc<Mutex<Shared>>,
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        let at = tokio::time::Instant::from_std(self.at);
        let mut shared = self.timer.lock().unwrap_or_else(|p| p.into_inner());
        // Armed for this task no later than `at`: it will wake the task by
        // then, and this deadline is looked at again.
        let armed = !shared.sleep.is_elapsed()
            && shared.sleep.deadline() <= at
            && shared
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()));
        if armed {
            return Poll::Pending;
        }
        if shared.sleep.deadline() != at {
            shared.sleep.as_mut().reset(at);
        }
        shared.waker = Some(cx.waker().clone());
        shared.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for Deadline {}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    #[tokio::test]
    async fn deadlines_fire_and_later_ones_wait_on_the_same_timer() {
        let timer = ConnectionTimer::new();
        let far = || timer.sleep(Duration::from_secs(3600));
        let short = Duration::from_millis(30);
        assert!(tokio::time::timeout(short, far()).await.is_err());
        // Near deadlines after a far one fire (the timer is brought forward),
        // and again once it has fired.
        timer.sleep(Duration::from_millis(1)).await;
        timer.sleep(Duration::from_millis(1)).await;
        drop(timer.sleep(Duration::from_millis(1)));
        assert!(tokio::time::timeout(short, far()).await.is_err());
        timer.sleep(Duration::from_millis(1)).await;
        // A later deadline rides on an earlier arming, which wakes the task
        // early; it is then re-armed and fires at its own time.
        let mut early = timer.sleep(Duration::from_millis(5));
        std::future::poll_fn(|cx| {
            let _ = early.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
        drop(early);
        timer.sleep(Duration::from_millis(30)).await;
        assert!(tokio::time::timeout(short, far()).await.is_err());
    }
}
