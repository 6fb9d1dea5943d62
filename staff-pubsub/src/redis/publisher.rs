//! The publishing side: one multiplexed connection, made on demand, whose
//! attempts are shared by the broadcasts that wait for it.

use std::future::Future;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError};
use futures_util::future::{BoxFuture as SharedBoxFuture, FutureExt, Shared};

use crate::error::{Outcome, TransportError};
use crate::loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::loom::sync::{Arc, Mutex};
use crate::net::{not_sent, Cause, Secrets};

use super::config::RedisConfig;

/// A connection attempt that every caller arriving while it runs awaits,
/// instead of starting its own.
type Attempt = Shared<SharedBoxFuture<'static, Result<MultiplexedConnection, Cause>>>;

/// The publishing side's connection.
enum Slot {
    Idle,
    Connecting {
        id: u64,
        attempt: Attempt,
    },
    Connected {
        id: u64,
        connection: MultiplexedConnection,
    },
}

/// The publishing side: one multiplexed connection, replaced after a
/// failure by the next publish. Never the `ConnectionManager`, which may
/// retry a command on its own: a publish reports exactly what Redis said.
///
/// Invariant: at most one connection attempt runs at a time, and a publish
/// waits for at most one (the one running when it arrives, or its own), so
/// a publish takes at most `connect_timeout + response_timeout`.
pub(crate) struct Publisher {
    client: Client,
    redis_config: AsyncConnectionConfig,
    pub(super) connect_timeout: Duration,
    pub(super) response_timeout: Duration,
    pub(super) secrets: Arc<Secrets>,
    pub(super) shown: Arc<str>,
    /// Held only to read or swap the slot, never across an `.await`.
    slot: Mutex<Slot>,
    next_id: AtomicU64,
}

impl Publisher {
    pub(super) fn new(
        client: Client,
        config: &RedisConfig,
        secrets: Arc<Secrets>,
        shown: Arc<str>,
    ) -> Self {
        Self {
            client,
            redis_config: config.redis_config(),
            connect_timeout: config.engine.connect_timeout,
            response_timeout: config.engine.response_timeout,
            secrets,
            shown,
            slot: Mutex::new(Slot::Idle),
            next_id: AtomicU64::new(0),
        }
    }

    /// The current connection, connecting if there is none. Concurrent
    /// callers share one attempt, bounded by the connect timeout.
    pub(super) async fn connection(&self) -> Result<(u64, MultiplexedConnection), Cause> {
        let (id, attempt) = {
            let mut slot = self.slot.lock();
            match &*slot {
                Slot::Connected { id, connection } => return Ok((*id, connection.clone())),
                Slot::Connecting { id, attempt } => (*id, attempt.clone()),
                Slot::Idle => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let attempt = self.attempt();
                    *slot = Slot::Connecting {
                        id,
                        attempt: attempt.clone(),
                    };
                    (id, attempt)
                }
            }
        };
        let result = attempt.await;
        let mut slot = self.slot.lock();
        if matches!(&*slot, Slot::Connecting { id: current, .. } if *current == id) {
            *slot = match &result {
                Ok(connection) => Slot::Connected {
                    id,
                    connection: connection.clone(),
                },
                Err(_) => Slot::Idle,
            };
        }
        result.map(|connection| (id, connection))
    }

    fn attempt(&self) -> Attempt {
        let client = self.client.clone();
        let config = self.redis_config.clone();
        let timeout = self.connect_timeout;
        let secrets = Arc::clone(&self.secrets);
        async move {
            let connecting = client.get_multiplexed_async_connection_with_config(&config);
            match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok(connection)) => Ok(connection),
                Ok(Err(error)) => Err(secrets.cause(&error)),
                Err(_) => Err(Cause(Arc::from(format!("no answer within {timeout:?}")))),
            }
        }
        .boxed()
        .shared()
    }

    /// Drops the connection `failed`, unless it was replaced already.
    fn forget(&self, failed: u64) {
        let mut slot = self.slot.lock();
        if matches!(&*slot, Slot::Connected { id, .. } if *id == failed) {
            *slot = Slot::Idle;
        }
    }

    /// Drops the current connection, whichever it is: the receive side lost
    /// its own, so this one most likely went with it. The next publish then
    /// connects afresh instead of failing once on a dead connection. An
    /// attempt under way is left to finish.
    pub(super) fn forget_current(&self) {
        let mut slot = self.slot.lock();
        if matches!(&*slot, Slot::Connected { .. }) {
            *slot = Slot::Idle;
        }
    }

    pub(crate) async fn publish(&self, channel: &str, bytes: &[u8]) -> Result<(), TransportError> {
        self.send("PUBLISH", |mut connection| async move {
            ::redis::cmd("PUBLISH")
                .arg(channel)
                .arg(bytes)
                .query_async::<i64>(&mut connection)
                .await
                .map(drop)
        })
        .await
    }

    /// Runs one command, `what`, on the publishing connection (connecting
    /// first if needed), within `connect_timeout + response_timeout`, and
    /// says whether Redis certainly did not get it when it fails.
    pub(crate) async fn send<'a, F, Fut>(
        &'a self,
        what: &'static str,
        command: F,
    ) -> Result<(), TransportError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut + 'a,
        Fut: Future<Output = Result<(), RedisError>> + 'a,
    {
        // Set once the command may have reached Redis: from then on a
        // failure's outcome is unknown.
        let written = AtomicBool::new(false);
        let bound = self.connect_timeout + self.response_timeout;
        match tokio::time::timeout(bound, self.try_send(what, command, &written)).await {
            Ok(result) => result,
            Err(_) => {
                let outcome = if written.load(Ordering::Relaxed) {
                    Outcome::Unknown
                } else {
                    Outcome::NotSent
                };
                Err(
                    TransportError::msg(format!("Redis {what} got no answer within {bound:?}"))
                        .with_outcome(outcome),
                )
            }
        }
    }

    async fn try_send<F, Fut>(
        &self,
        what: &'static str,
        command: F,
        written: &AtomicBool,
    ) -> Result<(), TransportError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<(), RedisError>>,
    {
        let (id, connection) = self.connection().await.map_err(|cause| {
            not_sent(format!(
                "cannot connect to Redis at {}: {cause}",
                self.shown
            ))
        })?;
        written.store(true, Ordering::Relaxed);
        match command(connection).await {
            Ok(()) => Ok(()),
            Err(error) => {
                let cause = self.secrets.cause(&error);
                // A reply from the server (no permission, ...) means Redis
                // refused the command, and leaves the connection usable;
                // anything else may have broken it after the write.
                if matches!(error.kind(), ErrorKind::Server(_)) {
                    return Err(not_sent(format!("Redis refused the {what}: {cause}")));
                }
                self.forget(id);
                Err(TransportError::msg(format!("Redis {what} failed: {cause}"))
                    .with_outcome(Outcome::Unknown))
            }
        }
    }

    /// The publishing connection, for a read (a replay): connecting first
    /// if needed, within the connect timeout.
    pub(crate) async fn reader(&self) -> Result<MultiplexedConnection, TransportError> {
        match self.connection().await {
            Ok((_, connection)) => Ok(connection),
            Err(cause) => Err(not_sent(format!(
                "cannot connect to Redis at {}: {cause}",
                self.shown
            ))),
        }
    }
}
