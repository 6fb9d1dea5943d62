//! Drain tasks: one per subscription, whatever the contender, on the
//! one-worker runtime; the clock runs until every drain has everything.

use std::future::{poll_fn, Future};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use staff_pubsub::staff::Message;
use staff_pubsub::{RecvError, Subscription};
use staff_pubsub_bench::contenders::floor::Inbox;
use staff_pubsub_bench::support::Countdown;
use tokio::runtime::Runtime;
use tokio::sync::broadcast;

/// Drain tasks of one round: started (and polled once) before the clock
/// starts; `time` waits for all of them to have received everything.
pub struct Drains {
    ready: Arc<Countdown>,
    done: Arc<Countdown>,
    lagged: Arc<AtomicU64>,
    /// Where a drain leaves its subscription when it is done, to be dropped
    /// after the clock stops: leaving a topic is not what is measured (and
    /// the contenders leave at very different costs).
    finished: Arc<Mutex<Vec<Box<dyn Send>>>>,
}

impl Drains {
    pub fn new(count: usize) -> Self {
        Self {
            ready: Countdown::new(count),
            done: Countdown::new(count),
            lagged: Arc::new(AtomicU64::new(0)),
            finished: Arc::new(Mutex::new(Vec::with_capacity(count))),
        }
    }

    pub fn spawn<S: Drain>(&self, rt: &Runtime, mut subscription: S, expected: u64) {
        let (ready, done, lagged, finished) = (
            Arc::clone(&self.ready),
            Arc::clone(&self.done),
            Arc::clone(&self.lagged),
            Arc::clone(&self.finished),
        );
        rt.spawn(async move {
            ready.done();
            let mut got = 0;
            while got < expected {
                match subscription.next().await {
                    Got::Message => got += 1,
                    Got::Lagged(n) => {
                        got += n;
                        lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Got::Closed => break,
                }
            }
            finished.lock().unwrap().push(Box::new(subscription));
            done.done();
        });
    }

    /// Runs `publish` on the clock once every drain is running; returns the
    /// time until every drain has everything.
    pub fn time(self, publish: impl FnOnce()) -> (Duration, u64) {
        self.ready.wait();
        let start = Instant::now();
        publish();
        self.done.wait();
        let elapsed = start.elapsed();
        drop(std::mem::take(&mut *self.finished.lock().unwrap()));
        (elapsed, self.lagged.load(Ordering::Relaxed))
    }
}

pub enum Got {
    Message,
    Lagged(u64),
    Closed,
}

/// One subscriber's receiving end, whatever the contender.
pub trait Drain: Send + 'static {
    fn next(&mut self) -> impl Future<Output = Got> + Send;
}

/// `ours`.
impl Drain for Subscription<Message> {
    async fn next(&mut self) -> Got {
        match self.recv().await {
            Ok(message) => {
                black_box(message);
                Got::Message
            }
            Err(RecvError::Lagged(n)) => Got::Lagged(n),
            Err(_) => Got::Closed,
        }
    }
}

/// `naive`.
impl Drain for broadcast::Receiver<Arc<Message>> {
    async fn next(&mut self) -> Got {
        match self.recv().await {
            Ok(message) => {
                black_box(message);
                Got::Message
            }
            Err(broadcast::error::RecvError::Lagged(n)) => Got::Lagged(n),
            Err(broadcast::error::RecvError::Closed) => Got::Closed,
        }
    }
}

/// `floor`.
impl Drain for Arc<Inbox<Message>> {
    async fn next(&mut self) -> Got {
        match poll_fn(|cx| self.poll_take(cx)).await {
            Ok(message) => {
                black_box(message);
                Got::Message
            }
            Err(RecvError::Lagged(n)) => Got::Lagged(n),
            Err(_) => Got::Closed,
        }
    }
}

/// The floor's queues, one per entry of `expected` (the messages it will
/// get), each with its drain task when it gets any: made in the same order
/// as subscriptions and their tasks are, so that they lie in memory alike.
pub fn floor_inboxes(rt: &Runtime, drains: &Drains, expected: &[u64]) -> Vec<Arc<Inbox<Message>>> {
    expected
        .iter()
        .map(|&expected| {
            let inbox = Arc::new(Inbox::new());
            if expected > 0 {
                drains.spawn(rt, Arc::clone(&inbox), expected);
            }
            inbox
        })
        .collect()
}
