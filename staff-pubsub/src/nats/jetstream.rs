//! Durable delivery over JetStream: the namespace's stream, the node's
//! log reader, and replays for `subscribe_since`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::{Outcome, TransportError};
use crate::loom::sync::atomic::{AtomicBool, Ordering};
use crate::loom::sync::Arc;
use crate::net::{not_sent, Inbound, RateLimit, Secrets, StopReport};
use crate::position::{Gap, Position, Retention};
use crate::topic::Topic;
use crate::transport::{LogCursor, LogRead, Replay};

/// The suffix of the subject every broadcast of a durable namespace is
/// appended to.
pub(super) const LOG: &str = "_log";

/// How many log entries one pull request of a node's reader asks for.
const PULL_BATCH: usize = 512;

/// How many log entries one step of a replay reads.
const REPLAY_BATCH: usize = 1_000;

/// How long JetStream keeps a consumer of this transport (reader or replay)
/// that nobody pulls from any more: the consumer of a node that went away.
const CONSUMER_INACTIVE: Duration = Duration::from_secs(30);

/// A pull request's expiry and idle heartbeat: a reader whose consumer
/// stays silent twice the heartbeat (a frozen server, a lost consumer)
/// starts a new one from where it was.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
const PULL_HEARTBEAT: Duration = Duration::from_secs(3);

/// The JetStream stream of a namespace: `staff-pubsub-` and the namespace,
/// every byte other than an ASCII letter, digit or `-` written `_XX` (hex),
/// so that two namespaces never share a stream (`app.x` is
/// `staff-pubsub-app_2Ex`).
pub(super) fn stream_name(namespace: &str) -> String {
    use std::fmt::Write as _;
    let mut name = String::from("staff-pubsub-");
    for byte in namespace.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            name.push(char::from(byte));
        } else {
            let _ = write!(name, "_{byte:02X}");
        }
    }
    name
}

/// The 16-bit log id of a stream created at `created` (the creation time
/// as the server reports it, RFC 3339): its FNV-1a hash folded to 16 bits.
/// Every node computes the same id for one stream; a stream created
/// afresh gets another (but for a 1 in 65,536 chance).
fn log_id(created: &str) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in created.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let folded = hash ^ (hash >> 16) ^ (hash >> 32) ^ (hash >> 48);
    // The low 16 bits of the fold.
    (folded & 0xffff) as u16
}

/// What this transport reads of a stream's info: its JSON fields, not
/// async-nats's typed info (whose date type depends on a feature of
/// async-nats that another crate may turn on).
#[derive(serde::Deserialize)]
pub(super) struct StreamInfo {
    created: String,
    config: StreamLimits,
    pub(super) state: StreamState,
}

#[derive(serde::Deserialize, PartialEq, Eq)]
struct StreamLimits {
    #[serde(default)]
    subjects: Vec<String>,
    #[serde(default)]
    max_msgs: i64,
    /// Nanoseconds; 0 for no limit.
    #[serde(default)]
    max_age: u64,
}

#[derive(serde::Deserialize)]
pub(super) struct StreamState {
    #[serde(default)]
    first_seq: u64,
    #[serde(default)]
    pub(super) last_seq: u64,
}

impl StreamInfo {
    pub(super) fn log(&self) -> u16 {
        log_id(&self.created)
    }

    /// The first sequence number still held: `last + 1` when empty.
    fn first(&self) -> u64 {
        self.state.first_seq.max(1)
    }
}

/// A durable namespace's stream: where broadcasts are appended and read.
pub(super) struct JetStreamLog {
    pub(super) js: async_nats::jetstream::Context,
    pub(super) stream: String,
    pub(super) subject: String,
    pub(super) retention: Retention,
    pub(super) secrets: Arc<Secrets>,
    pub(super) response_timeout: Duration,
}

impl JetStreamLog {
    fn limits(&self) -> StreamLimits {
        StreamLimits {
            subjects: vec![self.subject.clone()],
            max_msgs: self
                .retention
                .entries_limit()
                .map_or(-1, |entries| i64::try_from(entries).unwrap_or(i64::MAX)),
            max_age: self
                .retention
                .age_limit()
                .map_or(0, |age| u64::try_from(age.as_nanos()).unwrap_or(u64::MAX)),
        }
    }

    /// One JetStream API request, its error shown without secrets.
    async fn request<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        subject: String,
        body: &serde_json::Value,
    ) -> Result<Result<T, async_nats::jetstream::Error>, TransportError> {
        use async_nats::jetstream::response::Response;
        let answer = tokio::time::timeout(self.response_timeout, self.js.request(subject, body))
            .await
            .map_err(|_| {
                not_sent(format!(
                    "JetStream did not answer {what} within {:?}",
                    self.response_timeout
                ))
            })?
            .map_err(|error| {
                not_sent(format!(
                    "JetStream {what} failed: {}",
                    self.secrets.cause(&error)
                ))
            })?;
        Ok(match answer {
            Response::Ok(value) => Ok(value),
            Response::Err { error } => Err(error),
        })
    }

    /// The stream's info, `None` if it does not exist.
    pub(super) async fn info(&self) -> Result<Option<StreamInfo>, TransportError> {
        let answer = self
            .request::<StreamInfo>(
                "stream info",
                format!("STREAM.INFO.{}", self.stream),
                &serde_json::Value::Null,
            )
            .await?;
        match answer {
            Ok(info) => Ok(Some(info)),
            Err(error)
                if error.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            Err(error) => Err(not_sent(format!(
                "JetStream refused the stream info of {}: {error}",
                self.stream
            ))),
        }
    }

    /// Binds the stream, creating it with this node's retention if it does
    /// not exist. A stream that does not carry this namespace's log subject
    /// is refused; one with other limits is used as it is (WARN).
    pub(super) async fn bind(&self) -> Result<StreamInfo, TransportError> {
        let info = match self.info().await? {
            Some(info) => info,
            None => {
                let limits = self.limits();
                let body = serde_json::json!({
                    "name": self.stream,
                    "subjects": limits.subjects,
                    "retention": "limits",
                    "max_consumers": -1,
                    "max_msgs": limits.max_msgs,
                    "max_bytes": -1,
                    "max_age": limits.max_age,
                    "max_msgs_per_subject": -1,
                    "max_msg_size": -1,
                    "storage": "file",
                    "discard": "old",
                    "num_replicas": 1,
                });
                let created = self
                    .request::<StreamInfo>(
                        "stream create",
                        format!("STREAM.CREATE.{}", self.stream),
                        &body,
                    )
                    .await?;
                match created {
                    Ok(info) => {
                        tracing::info!(stream = %self.stream, subject = %self.subject, "created the JetStream stream of the namespace");
                        info
                    }
                    // Another node created it meanwhile.
                    Err(error)
                        if error.error_code()
                            == async_nats::jetstream::ErrorCode::STREAM_NAME_EXIST =>
                    {
                        self.info().await?.ok_or_else(|| {
                            not_sent(format!("the JetStream stream {} vanished", self.stream))
                        })?
                    }
                    Err(error) => {
                        return Err(not_sent(format!(
                            "JetStream refused to create the stream {}: {error}",
                            self.stream
                        )))
                    }
                }
            }
        };
        if !info.config.subjects.contains(&self.subject) {
            return Err(not_sent(format!(
                "the JetStream stream {} does not take {} (its subjects: {:?}): \
                 delete it or pick another namespace",
                self.stream, self.subject, info.config.subjects
            )));
        }
        let wanted = self.limits();
        if info.config.max_msgs != wanted.max_msgs || info.config.max_age != wanted.max_age {
            tracing::warn!(
                stream = %self.stream,
                max_msgs = info.config.max_msgs,
                max_age_ns = info.config.max_age,
                wanted_max_msgs = wanted.max_msgs,
                wanted_max_age_ns = wanted.max_age,
                "the namespace's JetStream stream exists with another retention than this node's: \
                 it keeps its own (update or delete the stream to change it)"
            );
        }
        Ok(info)
    }

    /// An ephemeral pull consumer of every entry from `start` on.
    async fn consumer(
        &self,
        start: u64,
        memory: bool,
    ) -> Result<async_nats::jetstream::consumer::PullConsumer, TransportError> {
        use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|error| {
                not_sent(format!("JetStream stream: {}", self.secrets.cause(&error)))
            })?;
        let config = pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start.max(1),
            },
            ack_policy: AckPolicy::None,
            inactive_threshold: CONSUMER_INACTIVE,
            memory_storage: memory,
            ..pull::Config::default()
        };
        tokio::time::timeout(self.response_timeout, stream.create_consumer(config))
            .await
            .map_err(|_| {
                not_sent(format!(
                    "JetStream made no consumer within {:?}",
                    self.response_timeout
                ))
            })?
            .map_err(|error| {
                not_sent(format!(
                    "cannot read the JetStream stream {}: {}",
                    self.stream,
                    self.secrets.cause(&error)
                ))
            })
    }

    /// Appends one envelope; `Ok` once JetStream acknowledged it.
    pub(super) async fn append(&self, bytes: Vec<u8>) -> Result<(), TransportError> {
        use async_nats::jetstream::context::PublishErrorKind;
        let handed = AtomicBool::new(false);
        let appending = async {
            let ack = self
                .js
                .publish(self.subject.clone(), Bytes::from(bytes))
                .await
                .map_err(|error| {
                    let outcome = match error.kind() {
                        // Nothing was written to the connection.
                        PublishErrorKind::MaxPayloadExceeded
                        | PublishErrorKind::MaxAckPending
                        | PublishErrorKind::TimedOut
                        | PublishErrorKind::Other => Outcome::NotSent,
                        _ => Outcome::Unknown,
                    };
                    TransportError::msg(format!(
                        "JetStream publish failed: {}",
                        self.secrets.cause(&error)
                    ))
                    .with_outcome(outcome)
                })?;
            handed.store(true, Ordering::Relaxed);
            ack.await.map(drop).map_err(|error| {
                let refused = std::error::Error::source(&error)
                    .is_some_and(|source| source.is::<async_nats::jetstream::Error>());
                let outcome = match error.kind() {
                    // No stream took it (no responders), or JetStream
                    // answered with an error: not stored.
                    PublishErrorKind::StreamNotFound | PublishErrorKind::MaxPayloadExceeded => {
                        Outcome::NotSent
                    }
                    PublishErrorKind::Other if refused => Outcome::NotSent,
                    _ => Outcome::Unknown,
                };
                TransportError::msg(format!(
                    "JetStream did not store the broadcast: {}",
                    self.secrets.cause(&error)
                ))
                .with_outcome(outcome)
            })
        };
        match tokio::time::timeout(self.response_timeout, appending).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::msg(format!(
                "JetStream did not acknowledge the broadcast within {:?}",
                self.response_timeout
            ))
            .with_outcome(if handed.load(Ordering::Relaxed) {
                Outcome::Unknown
            } else {
                Outcome::NotSent
            })),
        }
    }
}

/// How a reader's session with its consumer ended.
enum Ended {
    /// The server is gone: stop.
    Gone,
    /// Start a new consumer from where the node is (a reconnect, entries
    /// lost in transit).
    Restart,
}

/// Reads a durable namespace's log from where this node is, for as long
/// as the server lives: a new consumer after every reconnect or failure,
/// from the entry after the last one delivered.
pub(super) struct LogReader<M> {
    pub(super) log: Arc<JetStreamLog>,
    pub(super) inbound: Arc<Inbound<M>>,
    /// The log id being read.
    pub(super) id: u16,
    /// The sequence number of the next entry to deliver.
    pub(super) next: u64,
    pub(super) restart: Arc<tokio::sync::Notify>,
    pub(super) failure_log: RateLimit,
}

impl<M> LogReader<M>
where
    M: DeserializeOwned + Send + Sync + 'static,
{
    /// Reads until the server is gone; restarted from where it was if its
    /// task ends otherwise (a panic that escaped it). The state sits behind an async mutex, released
    /// when the task unwinds, so a restart goes on from the last entry read.
    pub(super) async fn run(self, stopped: StopReport<M>) {
        let task = format!("the NATS log reader of stream {}", self.log.stream);
        let reader = Arc::new(tokio::sync::Mutex::new(self));
        crate::net::supervise(
            stopped,
            crate::net::Backoff::new(Duration::from_millis(50), Duration::from_secs(2)),
            &task,
            " from its last entry",
            move || {
                let reader = Arc::clone(&reader);
                async move { reader.lock().await.read().await }
            },
        )
        .await;
    }

    async fn read(&mut self) {
        let mut backoff =
            crate::net::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            if !self.inbound.local.is_alive() {
                break;
            }
            match self.session().await {
                Ok(Ended::Gone) => break,
                Ok(Ended::Restart) => {
                    backoff =
                        crate::net::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
                }
                Err(error) => {
                    if self.failure_log.allow() {
                        tracing::warn!(%error, node = self.inbound.local.node_name(), "cannot read the NATS log now: retrying from where this node is");
                    }
                    // The next reconnect, or the backoff, whichever first.
                    let _ =
                        tokio::time::timeout(backoff.next_delay(), self.restart.notified()).await;
                }
            }
        }
    }

    /// Binds the stream, checks what was lost, and delivers from a new
    /// consumer until it fails or a restart is asked.
    async fn session(&mut self) -> Result<Ended, TransportError> {
        let info = self.log.bind().await?;
        let local = &self.inbound.local;
        let id = info.log();
        if id != self.id {
            // The stream was created afresh: what it held is gone.
            self.id = id;
            self.next = info.first();
            local.set_log_head(id, self.next - 1);
            local.signal_gap_with(Gap::LogLost);
            tracing::warn!(stream = %self.log.stream, node = local.node_name(), "the NATS log was lost (its stream was created afresh): subscribers told, reading the new one from its start");
        } else if info.state.last_seq.saturating_add(1) < self.next {
            // The stream went back: the server lost entries it had
            // acknowledged (and read to this node).
            self.next = info.state.last_seq + 1;
            local.set_log_head(id, info.state.last_seq);
            local.signal_gap_with(Gap::LogLost);
            tracing::warn!(stream = %self.log.stream, node = local.node_name(), "the NATS log went back (the server lost entries): subscribers told");
        } else if info.first() > self.next {
            self.trimmed(info.first());
        }
        let consumer = self.log.consumer(self.next, true).await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await
            .map_err(|error| {
                not_sent(format!(
                    "cannot pull from the JetStream stream: {}",
                    self.log.secrets.cause(&error)
                ))
            })?;
        self.failure_log.reset();
        // The first entry from a new consumer that is past `next` tells
        // what was trimmed; a later jump is a loss in transit (the client
        // dropped messages): read again from `next`.
        let mut fresh = true;
        loop {
            let item = tokio::select! {
                item = messages.next() => item,
                () = self.restart.notified() => return Ok(Ended::Restart),
            };
            let message = match item {
                None => return Ok(Ended::Restart),
                Some(Err(error)) => {
                    return Err(not_sent(format!(
                        "pulling from the JetStream stream failed: {}",
                        self.log.secrets.cause(&error)
                    )))
                }
                Some(Ok(message)) => message,
            };
            let seq = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(_) => {
                    return Err(not_sent(
                        "a JetStream message without its stream sequence number",
                    ))
                }
            };
            if seq < self.next {
                continue;
            }
            if seq > self.next {
                if !fresh {
                    return Ok(Ended::Restart);
                }
                self.trimmed(seq);
            }
            fresh = false;
            let Some(position) = Position::new(self.id, seq) else {
                return Err(not_sent(format!(
                    "JetStream sequence number {seq} is past a position's 48 bits"
                )));
            };
            // Past it before handling it: a message whose own code brings
            // the task down is not read again by the restarted reader.
            self.next = seq + 1;
            if !self.inbound.handle_logged(&message.payload, position) {
                return Ok(Ended::Gone);
            }
        }
    }

    /// Entries from `next` up to `first` (excluded) are gone: one gap
    /// saying so, and the node's position moves past them.
    fn trimmed(&mut self, first: u64) {
        let local = &self.inbound.local;
        let missing = first.saturating_sub(self.next);
        // The gap rule: `LogCursor`.
        if let Some(gap) = LogCursor::new(self.id, self.next).skip_to(first) {
            local.signal_gap_with(gap);
        }
        tracing::warn!(stream = %self.log.stream, node = local.node_name(), missing, "NATS log entries were trimmed before this node read them: subscribers told");
        local.set_log_head(self.id, first - 1);
        self.next = first;
    }
}

impl JetStreamLog {
    /// The entries after `after` through `through` that are for this node
    /// and list one of `topics`: see [`DurableLog::replay`](crate::transport::DurableLog::replay).
    pub(super) async fn replay<M>(
        &self,
        inbound: &Inbound<M>,
        after: Position,
        through: Position,
        topics: &[Topic],
    ) -> Result<Replay<M>, TransportError>
    where
        M: DeserializeOwned + Send + Sync + 'static,
    {
        let Some(total) = after.entries_until(through) else {
            return Err(not_sent(format!(
                "no log range from {after} through {through}"
            )));
        };
        if total > self.retention.replay_limit() {
            return Ok(Replay::new(
                Some(Gap::ReplayLimit { missing: total }),
                Vec::new(),
            ));
        }
        let Some(info) = self.info().await? else {
            return Ok(Replay::new(Some(Gap::LogLost), Vec::new()));
        };
        if info.log() != after.log() {
            return Ok(Replay::new(Some(Gap::LogLost), Vec::new()));
        }
        let log = after.log();
        let start = after.seq() + 1;
        let mut gap = None;
        let mut replayed = Vec::new();
        // The gap rule: `LogCursor`. Entries found gone are one gap at
        // the range's start (trimmed before it was read); found gone
        // further on, they were trimmed while it was read: read again.
        let mut cursor = LogCursor::after(after);
        let vanished =
            || not_sent("log entries vanished during the replay (trimmed meanwhile): try again");
        if total > 0 {
            let consumer = self.consumer(start, true).await?;
            let failed = |error: &(dyn std::error::Error + 'static)| {
                TransportError::msg(format!(
                    "reading the JetStream stream failed: {}",
                    self.secrets.cause(error)
                ))
                .with_outcome(Outcome::NotSent)
            };
            while cursor.next() <= through.seq() {
                let want = usize::try_from(through.seq() - cursor.next() + 1)
                    .unwrap_or(usize::MAX)
                    .min(REPLAY_BATCH);
                let reading = async {
                    let mut batch = consumer
                        .fetch()
                        .max_messages(want)
                        .messages()
                        .await
                        .map_err(|error| failed(&error))?;
                    let mut read = Vec::new();
                    while let Some(message) = batch.next().await {
                        let message = message.map_err(|error| failed(&*error))?;
                        let seq = message
                            .info()
                            .map_err(|error| failed(&*error))?
                            .stream_sequence;
                        read.push((seq, message.message.payload));
                    }
                    Ok::<_, TransportError>(read)
                };
                let read = tokio::time::timeout(self.response_timeout, reading)
                    .await
                    .map_err(|_| {
                        not_sent(format!(
                            "JetStream did not answer a replay within {:?}",
                            self.response_timeout
                        ))
                    })??;
                if read.is_empty() {
                    break;
                }
                for (seq, bytes) in read {
                    if seq > through.seq() {
                        // Past the range: what is left of it is gone.
                        if cursor.next() != start && cursor.next() <= through.seq() {
                            return Err(vanished());
                        }
                        gap = gap.or(cursor.skip_through(through.seq()));
                        break;
                    }
                    let at_start = cursor.next() == start;
                    match cursor.read(log, seq) {
                        LogRead::Read => continue,
                        LogRead::Next => {}
                        LogRead::After(lost) if at_start => gap = Some(lost),
                        LogRead::After(_) => return Err(vanished()),
                    }
                    // With the number of asked topics it lists: a copy per
                    // reached topic, as live (the delivery rule).
                    if let (Some((message, copies)), Some(position)) =
                        (inbound.replayed(&bytes, topics), Position::new(log, seq))
                    {
                        replayed.push((position, message, copies));
                    }
                }
            }
            let name = consumer.cached_info().name.clone();
            let js = self.js.clone();
            let stream = self.stream.clone();
            tokio::spawn(async move {
                if let Ok(stream) = js.get_stream_no_info(stream).await {
                    let _ = stream.delete_consumer(&name).await;
                }
            });
        }
        if cursor.next() <= through.seq() {
            // Nothing left in the range: all of it from the cursor on is
            // gone.
            if cursor.next() != start {
                return Err(vanished());
            }
            gap = cursor.skip_through(through.seq());
        }
        Ok(Replay::with_copies(gap, replayed))
    }
}
