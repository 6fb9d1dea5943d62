//! What the network transports share: URLs and errors shown without their
//! secrets, the handling of a received envelope (decode, refuse, contain
//! panics, dispatch), log rate limits, reconnection backoff.

use std::fmt;
use std::hash::BuildHasher;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::error::{Outcome, TransportError};
use crate::loom::sync::{Arc, Mutex};
use crate::position::Position;
use crate::topic::{Topic, TopicKey};
use crate::transport::LocalNode;
use crate::wire;

/// How often a persistent failure (reconnecting, a name clash) is logged
/// again at WARN or ERROR level after its first report.
pub(crate) use crate::throttle::REPEAT_LOG_EVERY;

/// The namespace of an engine config that sets none: the Redis channel's
/// and log keys' prefix, the first token of every NATS subject.
pub const DEFAULT_NAMESPACE: &str = "staff-pubsub";

/// What every engine's config holds, with the same defaults: the
/// namespace, the timeouts and the bounds of an envelope. Each engine's
/// config type keeps one and documents its setters in its own terms.
#[derive(Clone, Debug)]
pub(crate) struct EngineConfig {
    pub(crate) namespace: String,
    pub(crate) max_message_size: usize,
    pub(crate) max_topics: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            max_message_size: crate::wire::DEFAULT_MAX_MESSAGE_SIZE,
            max_topics: crate::wire::DEFAULT_MAX_TOPICS,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
        }
    }
}

impl EngineConfig {
    /// The checks every engine makes before connecting: a namespace (the
    /// engine checks its form), and bounds of at least one.
    pub(crate) fn check(&self, engine: &str) -> Result<(), TransportError> {
        if self.namespace.is_empty() {
            return Err(not_sent(format!(
                "the {engine} namespace must not be empty"
            )));
        }
        if self.max_message_size == 0 {
            return Err(not_sent(
                "the maximum message size must be at least one byte",
            ));
        }
        if self.max_topics == 0 {
            return Err(not_sent(
                "the maximum number of topics must be at least one",
            ));
        }
        Ok(())
    }

    /// The fields, for an engine config's `Debug`.
    pub(crate) fn debug_fields(&self, f: &mut std::fmt::DebugStruct<'_, '_>) {
        f.field("namespace", &self.namespace)
            .field("max_message_size", &self.max_message_size)
            .field("max_topics", &self.max_topics)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout);
    }
}

/// An error for a message that certainly did not reach the engine.
pub(crate) fn not_sent(what: impl Into<String>) -> TransportError {
    TransportError::msg(what).with_outcome(Outcome::NotSent)
}

/// `envelope` encoded for `engine`, within the config's bounds: more
/// topics than `max_topics` or more bytes than `max_size` is an error with
/// outcome `NotSent`.
pub(crate) fn encode_bounded<M: serde::Serialize>(
    engine: &str,
    envelope: &crate::transport::Envelope<'_, M>,
    max_size: usize,
    max_topics: usize,
) -> Result<Vec<u8>, TransportError> {
    let topics = envelope.topics.len();
    let encoded = if topics > max_topics {
        Err(wire::WireError::TooManyTopics {
            count: topics,
            max: max_topics,
        })
    } else {
        wire::encode(envelope, max_size)
    };
    encoded.map_err(|error| {
        TransportError::new(format!("message not encoded for {engine}"), error)
            .with_outcome(Outcome::NotSent)
    })
}

/// Why a receive task stopped reading.
#[cfg(feature = "redis")]
pub(crate) enum Stopped {
    /// The connection dropped or stopped answering: reconnect.
    ConnectionLost,
    /// The server is gone: the task ends.
    ServerGone,
}

/// Runs `handle`, the handling of one received message of `size` bytes,
/// so that a panic of the message's own code (its `Deserialize`, the `Drop`
/// of a message evicted from a full queue) skips that message only: it is
/// counted in `rejected` and logged at ERROR, and the receive task goes
/// on. Returns what `handle` returned, or after a panic whether the server
/// lives. A panic payload whose destructor panics in turn escapes from
/// here: the task's supervisor then restarts the task.
pub(crate) fn guard_message<M>(
    local: &LocalNode<M>,
    engine: &str,
    source: &dyn fmt::Display,
    size: usize,
    handle: impl FnOnce() -> bool,
) -> bool {
    match std::panic::catch_unwind(AssertUnwindSafe(handle)) {
        Ok(alive) => alive,
        Err(payload) => {
            local.record_rejected();
            tracing::error!(
                panic = panic_message(payload.as_ref()),
                size,
                source = %source,
                node = local.node_name(),
                "a message's own code panicked on the {engine} receive task: message skipped"
            );
            drop(payload);
            local.is_alive()
        }
    }
}

/// The URL as logs and errors show it: whatever may be a password
/// replaced by `***`. Everything between `://` and the *last* `@` is user
/// information (a password may hold `/`, `?` or `@`); of it only the user
/// name before the first `:` is kept. The values of `pass` and `password`
/// query parameters (Unix socket URLs) are replaced too. When in doubt it
/// hides more, never less.
pub(crate) fn redact(url: &str) -> String {
    let (mut shown, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let rest = match rest.rfind('@') {
        Some(at) => {
            match rest[..at].split_once(':') {
                Some((user, _password)) => {
                    shown.push_str(user);
                    shown.push_str(":***@");
                }
                None => shown.push_str("***@"),
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    let Some((path, query)) = rest.split_once('?') else {
        shown.push_str(rest);
        return shown;
    };
    shown.push_str(path);
    shown.push('?');
    let (query, fragment) = match query.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (query, None),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_key(key) => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    shown.push_str(&pairs.join("&"));
    if let Some(fragment) = fragment {
        shown.push('#');
        shown.push_str(fragment);
    }
    shown
}

/// Whether a query key names a password, as redis-rs reads it (`pass`),
/// or might (`password`), in any case and percent-encoding.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let key = percent_decode(key).to_ascii_lowercase();
    key == "pass" || key == "password"
}

/// `%XX` and `+` decoded, invalid sequences kept as they are.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The secrets of one URL, to scrub from any text shown: every spelling
/// of its password that the URL or redis-rs may produce.
#[derive(Default)]
pub(crate) struct Secrets {
    needles: Vec<String>,
}

impl Secrets {
    pub(crate) fn of(url: &str) -> Self {
        let mut needles = Vec::new();
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        if let Some(at) = rest.rfind('@') {
            let userinfo = &rest[..at];
            let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
            needles.push(password.to_owned());
            needles.push(percent_decode(password));
        }
        if let Some((_, query)) = rest.split_once('?') {
            let query = query.split_once('#').map_or(query, |(query, _)| query);
            for pair in query.split('&') {
                if let Some((key, value)) = pair.split_once('=') {
                    if is_secret_key(key) {
                        needles.push(value.to_owned());
                        needles.push(percent_decode(value));
                    }
                }
            }
        }
        #[cfg(feature = "redis")]
        if let Ok(client) = ::redis::Client::open(url) {
            if let Some(password) = client.get_connection_info().redis_settings().password() {
                needles.push(password.to_owned());
            }
        }
        needles.retain(|needle| !needle.is_empty());
        // Longest first, so that a password holding another is replaced whole.
        needles.sort_by_key(|needle| std::cmp::Reverse(needle.len()));
        needles.dedup();
        Self { needles }
    }

    /// Also hides what `other` hides.
    #[cfg(feature = "nats")]
    pub(crate) fn and(mut self, other: Secrets) -> Self {
        self.needles.extend(other.needles);
        self.needles
            .sort_by_key(|needle| std::cmp::Reverse(needle.len()));
        self.needles.dedup();
        self
    }

    /// Also hides `secret` (a password or token given apart from the URL).
    #[cfg(feature = "nats")]
    pub(crate) fn with(mut self, secret: &str) -> Self {
        if !secret.is_empty() {
            self.needles.push(secret.to_owned());
            self.needles
                .sort_by_key(|needle| std::cmp::Reverse(needle.len()));
            self.needles.dedup();
        }
        self
    }

    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for needle in &self.needles {
            if text.contains(needle.as_str()) {
                text = text.replace(needle.as_str(), "***");
            }
        }
        text
    }

    /// An engine error and its sources as one line of text, scrubbed.
    pub(crate) fn cause(&self, error: &(dyn std::error::Error + 'static)) -> Cause {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(next) = source {
            let more = next.to_string();
            if !text.contains(&more) {
                text.push_str(": ");
                text.push_str(&more);
            }
            source = next.source();
        }
        Cause(Arc::from(self.scrub(&text)))
    }
}

/// A Redis error as scrubbed text: what errors and logs carry instead of
/// redis-rs's own error, which could quote a URL.
#[derive(Clone)]
pub(crate) struct Cause(pub(crate) Arc<str>);

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::error::Error for Cause {}

/// Aborts a task when dropped: the receive task ends with its supervisor.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The text of a panic, when it has one.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

/// Drops a panic's payload, whose destructor is foreign code and may panic
/// too: such a second payload is leaked rather than dropped.
pub(crate) fn release_panic(payload: Box<dyn std::any::Any + Send>) {
    if let Err(again) = std::panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// Allows one log line now, then one per [`REPEAT_LOG_EVERY`].
#[derive(Default)]
pub(crate) struct RateLimit {
    last: Mutex<Option<Instant>>,
}

impl RateLimit {
    pub(crate) fn allow(&self) -> bool {
        let mut last = self.last.lock();
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < REPEAT_LOG_EVERY => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }

    pub(crate) fn reset(&self) {
        *self.last.lock() = None;
    }
}

/// Reports, when dropped while its server lives, that a transport's task was
/// stopped from outside (its tokio runtime shut down, most likely: a
/// networked server belongs to the runtime it was built in): the node no
/// longer receives, so its state turns disconnected, every subscriber gets a
/// gap, and an ERROR says why. Disarmed when the task ends normally (the
/// server is gone).
pub(crate) struct StopReport<M> {
    local: LocalNode<M>,
    engine: &'static str,
    armed: bool,
}

impl<M> StopReport<M> {
    pub(crate) fn new(local: LocalNode<M>, engine: &'static str) -> Self {
        Self {
            local,
            engine,
            armed: true,
        }
    }

    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

/// Runs the task `start` makes, and runs it again after a backoff whenever
/// it ends while the server lives (a panic that escaped it, or its end):
/// the connection state turns disconnected meanwhile, and each restart is
/// logged at ERROR, naming `task` and what the restart does (`then`). Ends,
/// disarming `stopped`, once the server is gone; dropped from outside (its
/// runtime shut down), `stopped` reports.
pub(crate) async fn supervise<M, F, Fut>(
    mut stopped: StopReport<M>,
    mut backoff: Backoff,
    task: &str,
    then: &str,
    mut start: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let local = stopped.local.clone();
    loop {
        let mut running = AbortOnDrop(tokio::spawn(start()));
        let ended = (&mut running.0).await;
        if !local.is_alive() {
            stopped.disarm();
            break;
        }
        local.set_connection(crate::transport::Connection::Disconnected);
        let reason = match ended {
            Ok(()) => "it ended".to_owned(),
            Err(error) if error.is_panic() => {
                let payload = error.into_panic();
                let reason = format!("it panicked: {}", panic_message(payload.as_ref()));
                release_panic(payload);
                reason
            }
            Err(error) => format!("it was stopped: {error}"),
        };
        tracing::error!(
            node = local.node_name(),
            "{task} stopped ({reason}): restarting it{then}"
        );
        tokio::time::sleep(backoff.next_delay()).await;
    }
    tracing::debug!(node = local.node_name(), "{task} stopped");
}

impl<M> Drop for StopReport<M> {
    fn drop(&mut self) {
        if !self.armed || !self.local.is_alive() {
            return;
        }
        self.local
            .set_connection(crate::transport::Connection::Disconnected);
        self.local.signal_gap();
        tracing::error!(
            node = self.local.node_name(),
            "the {} transport's task was stopped while its server lives (its tokio runtime \
             shut down?): this node no longer receives from other nodes; build a networked \
             server in the runtime that uses it",
            self.engine
        );
    }
}

/// The receiving side of a network transport: turns one received envelope
/// into deliveries, and skips, counts and logs anything else.
pub(crate) struct Inbound<M> {
    pub(crate) local: LocalNode<M>,
    /// The engine, for log lines: `Redis`, `NATS`.
    pub(crate) engine: &'static str,
    /// Where envelopes come from (the channel, the subject prefix).
    pub(crate) source: Arc<str>,
    pub(crate) max_message_size: usize,
    pub(crate) max_topics: usize,
    pub(crate) conflict_log: RateLimit,
    /// How this node's own `except_origin` envelopes begin
    /// ([`wire::own_prefix`]): they are skipped before any decoding.
    own_prefix: Box<[u8]>,
}

impl<M> Inbound<M>
where
    M: DeserializeOwned + Send + Sync + 'static,
{
    pub(crate) fn new(
        local: LocalNode<M>,
        engine: &'static str,
        source: Arc<str>,
        max_message_size: usize,
        max_topics: usize,
    ) -> Self {
        let own_prefix = wire::own_prefix(local.node_name(), local.instance()).into();
        Self {
            local,
            engine,
            source,
            max_message_size,
            max_topics,
            conflict_log: RateLimit::default(),
            own_prefix,
        }
    }

    /// Decodes and dispatches one envelope; skips, counts and logs anything
    /// malformed, and a panic of the message's own code (its
    /// `Deserialize`, or the `Drop` of a message evicted from a full
    /// queue). Returns false once the server is gone.
    #[cfg(feature = "redis")]
    pub(crate) fn handle(&self, bytes: &[u8]) -> bool {
        self.handle_checked(bytes, |_| true)
    }

    /// As [`handle`](Self::handle), for the entry at `position` of a
    /// durable log: dispatched with its position, and recorded as read
    /// even when it is skipped.
    pub(crate) fn handle_logged(&self, bytes: &[u8], position: Position) -> bool {
        self.guarded(bytes, Some(position), &|_| true)
    }

    /// The message of a log entry being replayed, if it is for this node
    /// and lists one of `wanted` (distinct topics), with the number of
    /// `wanted` topics it lists: the copies a subscription on them
    /// receives. `None` for any other entry, and for one that does not
    /// decode (counted and logged when it was read live).
    pub(crate) fn replayed(&self, bytes: &[u8], wanted: &[Topic]) -> Option<(M, usize)> {
        let incoming = wire::decode(bytes, self.max_message_size).ok()?;
        if !incoming.is_for(self.local.node_name(), self.local.instance())
            || incoming.topics().len() > self.max_topics
        {
            return None;
        }
        let copies = wanted
            .iter()
            .filter(|wanted| {
                incoming
                    .topics()
                    .any(|topic| TopicKey::from_wire(topic) == wanted.as_key())
            })
            .count();
        if copies == 0 {
            return None;
        }
        std::panic::catch_unwind(AssertUnwindSafe(|| incoming.message::<M>().ok()))
            .ok()
            .flatten()
            .map(|message| (message, copies))
    }

    /// As [`handle`](Self::handle), skipping (and counting, as misrouted)
    /// an envelope that `belongs` refuses: one that does not match where it
    /// arrived.
    pub(crate) fn handle_checked(
        &self,
        bytes: &[u8],
        belongs: impl Fn(&wire::Incoming<'_>) -> bool,
    ) -> bool {
        self.guarded(bytes, None, &belongs)
    }

    fn guarded(
        &self,
        bytes: &[u8],
        position: Option<Position>,
        belongs: &dyn Fn(&wire::Incoming<'_>) -> bool,
    ) -> bool {
        guard_message(&self.local, self.engine, &self.source, bytes.len(), || {
            self.handle_unguarded(bytes, position, belongs)
        })
    }

    fn handle_unguarded(
        &self,
        bytes: &[u8],
        position: Option<Position>,
        belongs: &dyn Fn(&wire::Incoming<'_>) -> bool,
    ) -> bool {
        if let Some(position) = position {
            // Read, whatever becomes of it: a resume replays from the log
            // up to here. Dispatching records it again, harmlessly.
            self.local.set_log_head(position.log(), position.seq());
        }
        // This node's own broadcast, which it dispatched at the call: every
        // node reads its own envelopes back, and most of what a busy sender
        // reads is its own. Only this node writes its instance id (64
        // random bits) and it writes them whole: bytes that begin so but
        // are not one of its envelopes are forged or corrupted, and are
        // skipped unread too (not counted). Oversize ones go the usual way.
        if !self.own_prefix.is_empty()
            && bytes.len() <= self.max_message_size
            && bytes.starts_with(&self.own_prefix)
        {
            return self.local.is_alive();
        }
        let me = self.local.node_name();
        let instance = self.local.instance();
        let incoming = match wire::decode(bytes, self.max_message_size) {
            Ok(incoming) => incoming,
            Err(error) => return self.reject(&error, bytes.len()),
        };
        if !belongs(&incoming) {
            return self.reject(&wire::WireError::Misrouted, bytes.len());
        }
        if incoming.is_name_conflict(me, instance) {
            self.local.record_name_conflict();
            if self.conflict_log.allow() {
                tracing::error!(
                    node = me,
                    other_instance = %format_args!("{:016x}", incoming.instance().unwrap_or_default()),
                    own_instance = %format_args!("{instance:016x}"),
                    source = %self.source,
                    "another live node uses this node's name: give each node a unique name \
                     (its broadcasts are still delivered here; see stats().name_conflicts)"
                );
            }
        }
        if !incoming.is_for(me, instance) {
            return self.local.is_alive();
        }
        let topics = incoming.topics().len();
        if topics > self.max_topics {
            let error = wire::WireError::TooManyTopics {
                count: topics,
                max: self.max_topics,
            };
            return self.reject(&error, bytes.len());
        }
        match incoming.message::<M>() {
            Ok(message) => match position {
                Some(position) => self
                    .local
                    .dispatch_logged(position, incoming.topics(), message)
                    .is_some(),
                None => self
                    .local
                    .dispatch_wire(incoming.topics(), message)
                    .is_some(),
            },
            Err(error) => self.reject(&error, bytes.len()),
        }
    }

    fn reject(&self, error: &wire::WireError, size: usize) -> bool {
        self.local.record_rejected();
        tracing::warn!(
            %error,
            size,
            source = %self.source,
            node = self.local.node_name(),
            "skipped a message from {}",
            self.engine
        );
        self.local.is_alive()
    }
}

/// One run of reconnect attempts: the backoff between them, their count,
/// and which failures deserve a WARN (the first, one whose cause differs
/// from the previous one's, then one every [`REPEAT_LOG_EVERY`]); the
/// others are for DEBUG.
#[cfg(feature = "redis")]
pub(crate) struct Retrying<'a> {
    backoff: Backoff,
    attempts: u64,
    last_cause: String,
    log: &'a RateLimit,
}

#[cfg(feature = "redis")]
impl<'a> Retrying<'a> {
    /// A new run: the first failure will be logged at WARN.
    pub(crate) fn new(min: Duration, max: Duration, log: &'a RateLimit) -> Self {
        log.reset();
        Self {
            backoff: Backoff::new(min, max),
            attempts: 0,
            last_cause: String::new(),
            log,
        }
    }

    /// Counts an attempt; returns the count so far.
    pub(crate) fn attempt(&mut self) -> u64 {
        self.attempts += 1;
        self.attempts
    }

    /// Records a failed attempt's cause: whether to log it at WARN.
    pub(crate) fn failed(&mut self, cause: &str) -> bool {
        // Always asked, so that a changed cause restarts the interval.
        let allowed = self.log.allow();
        let changed = cause != self.last_cause;
        cause.clone_into(&mut self.last_cause);
        changed || allowed
    }

    /// Waits before the next attempt.
    pub(crate) async fn pause(&mut self) {
        tokio::time::sleep(self.backoff.next_delay()).await;
    }
}

/// Exponential backoff between two bounds, with jitter so that the nodes
/// of a cluster do not all reconnect at the same instant.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self { next: min, max }
    }

    /// The delay before the next attempt: between half of and the whole
    /// current step; the step doubles up to the maximum.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.next.min(self.max);
        self.next = step.saturating_mul(2).min(self.max);
        let half = step / 2;
        let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let random =
            std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now());
        let jitter = if spread == 0 { 0 } else { random % spread };
        half + Duration::from_nanos(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://app:s3cret@127.0.0.1:6379/0"),
            "redis://app:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("rediss://:s3cret@example.invalid"),
            "rediss://:***@example.invalid"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://tok@host/1"), "redis://***@host/1");
        assert_eq!(redact("not a url"), "not a url");
    }

    /// Every URL form redis-rs accepts, with a password where it can carry
    /// one: neither the shown URL nor a scrubbed text holds the password.
    #[test]
    fn no_url_form_shows_its_password() {
        let cases = [
            (
                "redis://app:S3cret@127.0.0.1:6379/0",
                "S3cret",
                "redis://app:***@127.0.0.1:6379/0",
            ),
            (
                "redis://:S3cret@127.0.0.1",
                "S3cret",
                "redis://:***@127.0.0.1",
            ),
            (
                "redis://app:S3c/ret@host",
                "S3c/ret",
                "redis://app:***@host",
            ),
            (
                "redis://app:S3c%2Fret@host:1/2",
                "S3c/ret",
                "redis://app:***@host:1/2",
            ),
            (
                "redis://app:p@ss?w#rd@host",
                "p@ss?w#rd",
                "redis://app:***@host",
            ),
            (
                "rediss://app:S3cret@host/#insecure",
                "S3cret",
                "rediss://app:***@host/#insecure",
            ),
            (
                "valkey://app:S3cret@host",
                "S3cret",
                "valkey://app:***@host",
            ),
            (
                "valkeys://app:S3cret@host",
                "S3cret",
                "valkeys://app:***@host",
            ),
            (
                "redis+unix:///tmp/r.sock?pass=S3cret",
                "S3cret",
                "redis+unix:///tmp/r.sock?pass=***",
            ),
            (
                "unix:///tmp/r.sock?db=1&user=app&pass=S3cret",
                "S3cret",
                "unix:///tmp/r.sock?db=1&user=app&pass=***",
            ),
            (
                "unix:///tmp/r.sock?PASSWORD=S3cret&db=2",
                "S3cret",
                "unix:///tmp/r.sock?PASSWORD=***&db=2",
            ),
            (
                "unix:///tmp/r.sock?p%61ss=S3c%2Bret",
                "S3c+ret",
                "unix:///tmp/r.sock?p%61ss=***",
            ),
        ];
        for (url, password, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
            let secrets = Secrets::of(url);
            let text = format!(
                "failed at {url} with {password} and {}",
                percent_decode(password)
            );
            let scrubbed = secrets.scrub(&text);
            assert!(!scrubbed.contains(password), "{url}: {scrubbed}");
        }
    }

    #[test]
    fn backoff_doubles_within_its_bounds() {
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        let mut backoff = Backoff::new(min, max);
        let mut step = min;
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} for step {step:?}"
            );
            step = (step * 2).min(max);
        }
        assert!(backoff.next_delay() <= max);
        let mut zero = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.next_delay(), Duration::ZERO);
    }
}
