//! A node's log reader: `XREAD BLOCK` from its cursor, kept across
//! reconnects and restarts; the head check that finds a log deleted or
//! replaced; the gap rule for what it finds missing.

use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, RedisError, Value};

use serde::de::DeserializeOwned;

use super::super::{Publisher, RedisConfig};
use super::{entries_of, fresh_log_id, Log, RawEntry, HEAD, PAGE, RENEW};
use crate::error::TransportError;
use crate::loom::sync::{Arc, Mutex};
use crate::net::{not_sent, Backoff, Inbound, RateLimit, Retrying, Secrets, StopReport, Stopped};
use crate::position::{Gap, Position, Retention};
use crate::transport::{Connection, LocalNode, LogCursor};

/// Where the reader is: the last entry it read, kept across reconnects and
/// restarts of its task.
struct Cursor {
    log: u16,
    /// The last sequence number read (0: none of this log yet).
    seq: u64,
    /// The id to read after: the last entry's, whatever it held.
    from: String,
    /// The largest stream id read (an entry is counted as rejected once,
    /// when first read past this: not again when the stream is read anew
    /// from its start after the log changed).
    seen: (u64, u64),
    /// The first sequence number and the nonce of the entry holding
    /// position `seq`, to tell it from another entry given the same
    /// numbers by a Redis that lost its last writes.
    entry: Option<(u64, u64)>,
    /// The next entry starts a log this reader just adopted: no gap is
    /// checked before it.
    adopted: bool,
    /// The last few log ids this reader left for a newer one: an entry
    /// carrying one of them after the newer log's entries is not the log's
    /// (a log's entries never follow a newer log's), and is rejected.
    left: Vec<u16>,
}

impl Cursor {
    /// How many left log ids [`Cursor::left`] remembers.
    const LEFT: usize = 8;

    /// Leaves the current log for `log`, reading on after its sequence
    /// number `from` (0: from the stream's start, passing over the entries
    /// of other logs until the first of `log`).
    fn adopt(&mut self, log: u16, from: u64) {
        if self.log != log {
            if self.left.len() == Self::LEFT {
                self.left.remove(0);
            }
            self.left.push(self.log);
            self.left.retain(|left| *left != log);
        }
        self.log = log;
        self.seq = from;
        self.from = format!("{from}-0");
        self.entry = None;
        self.adopted = true;
    }
}

/// Starts the durable log of `config`'s namespace for `local`: reads the
/// log's head (starting a log if there is none), records it as this
/// node's, and starts the supervised reader from there.
pub(crate) async fn open<M>(
    config: &RedisConfig,
    retention: Retention,
    client: Client,
    publisher: Arc<Publisher>,
    secrets: Arc<Secrets>,
    inbound: Inbound<M>,
    runtime: &tokio::runtime::Handle,
) -> Result<(Arc<Log<M>>, tokio::task::JoinHandle<()>), TransportError>
where
    M: DeserializeOwned + Send + Sync + 'static,
{
    let local = inbound.local.clone();
    let log = Arc::new(Log {
        stream: Arc::from(config.log_key()),
        meta: Arc::from(config.log_meta_key()),
        retention,
        response_timeout: config.engine.response_timeout,
        publisher,
        inbound: Arc::new(inbound),
        queue: Mutex::default(),
        runtime: runtime.clone(),
    });
    let mut connection = log.publisher.reader().await?;
    let head = tokio::time::timeout(config.engine.connect_timeout, head(&log, &mut connection))
        .await
        .map_err(|_| {
            not_sent(format!(
                "cannot read the log at {}: no answer within {:?}",
                log.publisher.shown, config.engine.connect_timeout
            ))
        })?
        .map_err(|error| {
            not_sent(format!(
                "cannot read the log at {}: {}",
                log.publisher.shown,
                secrets.cause(&error)
            ))
        })?;
    let Head {
        log: log_id, seq, ..
    } = head;
    local.set_log_head(log_id, seq);
    local.set_connection(Connection::Connected);
    tracing::info!(
        url = %log.publisher.shown,
        stream = %log.stream,
        node = local.node_name(),
        log = %format_args!("{log_id:04x}"),
        seq,
        "connected to Redis: durable log"
    );
    let reader = Arc::new(Reader {
        client,
        log: Arc::clone(&log),
        local: local.clone(),
        config: config.clone(),
        secrets,
        reconnect_log: RateLimit::default(),
        cursor: Mutex::new(Cursor {
            log: log_id,
            seq,
            from: format!("{seq}-0"),
            seen: (seq, 0),
            entry: None,
            adopted: false,
            left: Vec::new(),
        }),
    });
    let stopped = StopReport::new(local, "Redis");
    let supervisor = runtime.spawn(supervise(reader, stopped));
    Ok((log, supervisor))
}

/// What [`HEAD_SCRIPT`] found.
struct Head {
    /// The log's id.
    log: u16,
    /// The log's last sequence number (0: none yet).
    seq: u64,
    /// The stream's last id (0-0 when there is no stream).
    top: (u64, u64),
    /// The log's keys held something that is not the log's own, which
    /// the script replaced (a new log started).
    foreign: bool,
}

/// Runs [`HEAD_SCRIPT`]: the log's id and last sequence number, and the
/// stream's last id.
async fn head<M>(log: &Log<M>, connection: &mut MultiplexedConnection) -> Result<Head, RedisError>
where
    M: DeserializeOwned + Send + Sync + 'static,
{
    let (id, seq, top, foreign): (u16, u64, String, u8) = HEAD
        .key(&*log.stream)
        .key(&*log.meta)
        .arg(fresh_log_id())
        .invoke_async(connection)
        .await?;
    let head = Head {
        log: id,
        seq,
        // An id Redis gave (or 0-0): always of the form `<u64>-<u64>`.
        top: stream_id(&top).unwrap_or((0, 0)),
        foreign: foreign == 1,
    };
    if head.foreign {
        log.found_foreign();
    }
    Ok(head)
}

/// A stream id `<ms>-<seq>` as a pair that orders as Redis orders ids.
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (major, minor) = id.split_once('-')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// What the reader does after one entry.
enum Step {
    /// Reads on.
    Next,
    /// Reads again from the cursor, which moved back.
    Reread,
    /// Stops: the server is gone.
    Gone,
}

/// The receive side of a durable log: one task per transport, restarted
/// by [`supervise`] with its cursor kept.
struct Reader<M> {
    client: Client,
    log: Arc<Log<M>>,
    local: LocalNode<M>,
    config: RedisConfig,
    secrets: Arc<Secrets>,
    reconnect_log: RateLimit,
    cursor: Mutex<Cursor>,
}

/// Runs the reader, and runs it again whenever it ends while the server
/// lives: it resumes from its cursor, so nothing is lost.
async fn supervise<M>(reader: Arc<Reader<M>>, stopped: StopReport<M>)
where
    M: DeserializeOwned + Send + Sync + 'static,
{
    let backoff = Backoff::new(reader.config.reconnect_min, reader.config.reconnect_max);
    let task = format!("the Redis log reader of {}", reader.log.stream);
    crate::net::supervise(stopped, backoff, &task, " from its last entry", || {
        Arc::clone(&reader).run()
    })
    .await;
}

impl<M> Reader<M>
where
    M: DeserializeOwned + Send + Sync + 'static,
{
    async fn run(self: Arc<Self>) {
        loop {
            let Some(mut connection) = self.connect().await else {
                return;
            };
            match self.read(&mut connection).await {
                Stopped::ServerGone => return,
                Stopped::ConnectionLost => {
                    self.log.publisher.forget_current();
                    self.local.set_connection(Connection::Disconnected);
                    tracing::warn!(
                        stream = %self.log.stream,
                        node = self.local.node_name(),
                        "lost the Redis log connection: reconnecting, then reading on from the last entry read"
                    );
                }
            }
        }
    }

    /// The reader's own connection: `XREAD BLOCK` holds it.
    fn connection_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.engine.connect_timeout))
            .set_response_timeout(None)
    }

    /// How long one `XREAD` blocks: also how often a silent connection is
    /// noticed (with the response timeout on top).
    fn block(&self) -> Duration {
        self.config
            .health_check_interval
            .clamp(Duration::from_millis(10), Duration::from_secs(60))
    }

    /// Connects (waiting longer after each failure), checks the log's head
    /// against the cursor, and reports the connection. `None` once the
    /// server is gone.
    async fn connect(&self) -> Option<MultiplexedConnection> {
        let mut retrying = Retrying::new(
            self.config.reconnect_min,
            self.config.reconnect_max,
            &self.reconnect_log,
        );
        loop {
            if !self.local.is_alive() {
                return None;
            }
            let attempts = retrying.attempt();
            let config = self.connection_config();
            let attempt = tokio::time::timeout(self.config.engine.connect_timeout, async {
                let mut connection = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                let head = head(&self.log, &mut connection).await?;
                Ok::<_, RedisError>((connection, head))
            })
            .await;
            let cause = match attempt {
                Ok(Ok((mut connection, head))) => {
                    match self.check_head(&mut connection, head).await {
                        Ok(()) => {
                            self.local.set_connection(Connection::Connected);
                            tracing::info!(
                                stream = %self.log.stream,
                                node = self.local.node_name(),
                                attempts,
                                "reconnected to the Redis log: reading on from the last entry read"
                            );
                            return Some(connection);
                        }
                        Err(error) => self.secrets.cause(&error).to_string(),
                    }
                }
                Ok(Err(error)) => self.secrets.cause(&error).to_string(),
                Err(_) => format!("no answer within {:?}", self.config.engine.connect_timeout),
            };
            // Not reading: whatever the state said (the first connection
            // is made by `open`, before this task connects on its own).
            self.local.set_connection(Connection::Disconnected);
            if retrying.failed(&cause) {
                tracing::warn!(
                    url = %self.log.publisher.shown,
                    %cause,
                    attempts,
                    stream = %self.log.stream,
                    node = self.local.node_name(),
                    "cannot reconnect to the Redis log: retrying"
                );
            } else {
                tracing::debug!(%cause, attempts, stream = %self.log.stream, "Redis log reconnection failed");
            }
            retrying.pause().await;
        }
    }

    /// After a reconnect, and once per blocking interval while reading: a
    /// log with another id was started (Redis lost it, its keys were
    /// deleted or held values not the log's own), or the log is shorter
    /// than what was read (Redis lost its last writes: the log gets a new
    /// id, since the lost sequence numbers will be reused). Either way
    /// subscribers are told the log was lost, and reading goes on from the
    /// new log's start or end. When the log goes on but the stream now
    /// ends before the cursor (the stream was deleted, and the log went on
    /// in a new one), reading goes on from the last entry of the log read,
    /// so the entries after it are not left below the cursor.
    async fn check_head(
        &self,
        connection: &mut MultiplexedConnection,
        head: Head,
    ) -> Result<(), RedisError> {
        let Head { log, seq, top, .. } = head;
        let (known_log, known_seq, known_nonce) = {
            let mut cursor = self.cursor.lock();
            if top < cursor.seen {
                // The stream was written anew below what was read: its
                // entries are new, and counted when read.
                cursor.seen = (0, 0);
            }
            (cursor.log, cursor.seq, cursor.entry)
        };
        if log == known_log
            && seq >= known_seq
            && self.same_entry(connection, known_seq, known_nonce).await?
        {
            let mut cursor = self.cursor.lock();
            let from = stream_id(&cursor.from).unwrap_or((0, 0));
            if top < from && cursor.log == known_log && cursor.seq == known_seq {
                tracing::warn!(
                    stream = %self.log.stream,
                    node = self.local.node_name(),
                    from = %cursor.from,
                    "the Redis log's stream now ends before the last id read (it was deleted or written anew): \
                     reading on from the last entry of the log read"
                );
                cursor.from = format!("{known_seq}-0");
            }
            return Ok(());
        }
        // From the new log's start: a log found anew may already hold
        // entries appended since it started (the stream's older entries, of
        // the lost log, are passed over); a renewed one goes on from `seq`.
        let (new_log, from) = if log == known_log {
            let renewed: String = RENEW
                .key(&*self.log.stream)
                .key(&*self.log.meta)
                .arg(fresh_log_id())
                .arg(known_log)
                .invoke_async(connection)
                .await?;
            (renewed.parse().unwrap_or(0), seq)
        } else {
            (log, 0)
        };
        tracing::error!(
            stream = %self.log.stream,
            node = self.local.node_name(),
            had = %format_args!("{known_log:04x}-{known_seq}"),
            found = %format_args!("{log:04x}-{seq}"),
            "the Redis log was lost (Redis restarted without persistence or lost its last writes, \
             or its keys were deleted or overwritten): subscribers are told; reading the new log"
        );
        self.cursor.lock().adopt(new_log, from);
        self.local.signal_gap_with(Gap::LogLost);
        self.local.set_log_head(new_log, from);
        Ok(())
    }

    /// Whether the log still holds, at `seq`, the entry this node read
    /// there (`entry`: its first sequence number and nonce): false when
    /// Redis lost its last writes and gave `seq` to another entry since
    /// (one with another nonce, or starting elsewhere). An entry trimmed
    /// meanwhile, or one read without a nonce, cannot be checked and counts
    /// as the same.
    async fn same_entry(
        &self,
        connection: &mut MultiplexedConnection,
        seq: u64,
        entry: Option<(u64, u64)>,
    ) -> Result<bool, RedisError> {
        let Some((first, nonce)) = entry.filter(|_| seq > 0) else {
            return Ok(true);
        };
        // The last entry at or before `seq`: the one holding it, if any.
        let found: Value = ::redis::cmd("XREVRANGE")
            .arg(&*self.log.stream)
            .arg(format!("{seq}-0"))
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(connection)
            .await?;
        Ok(match entries_of(found).pop() {
            Some(found) if found.seq == Some(first) => found.nonce == Some(nonce),
            // Another entry holds `seq` now.
            Some(found) if found.last().is_some_and(|last| last >= seq) => false,
            // An entry that ends before `seq` (a stray one, or one of a
            // log that started anew, also checked by the log's id), or a
            // stream emptied up to it: the entry read is gone (trimmed).
            _ => true,
        })
    }

    /// Delivers what the log holds after the cursor until the connection
    /// breaks or the server is gone. Checks the log's head once per
    /// blocking interval (an idle log's `XREAD` returns empty after it): a
    /// log whose keys vanished or were replaced while this reader stayed
    /// connected is noticed then, even when its new entries all lie below
    /// the cursor, where `XREAD` never returns them.
    async fn read(&self, connection: &mut MultiplexedConnection) -> Stopped {
        let block = self.block();
        let bound = block + self.config.engine.response_timeout;
        let block_ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX);
        let mut checked = tokio::time::Instant::now();
        loop {
            if !self.local.is_alive() {
                return Stopped::ServerGone;
            }
            if checked.elapsed() >= block {
                let check = async {
                    let head = head(&self.log, connection).await?;
                    self.check_head(connection, head).await
                };
                match tokio::time::timeout(self.config.engine.response_timeout, check).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        let cause = self.secrets.cause(&error);
                        tracing::warn!(%cause, stream = %self.log.stream, "Redis log head check failed");
                        return Stopped::ConnectionLost;
                    }
                    Err(_) => {
                        tracing::warn!(stream = %self.log.stream, "Redis log head check got no answer");
                        return Stopped::ConnectionLost;
                    }
                }
                checked = tokio::time::Instant::now();
            }
            let from = self.cursor.lock().from.clone();
            let mut xread = ::redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(PAGE)
                .arg("BLOCK")
                .arg(block_ms)
                .arg("STREAMS")
                .arg(&*self.log.stream)
                .arg(from);
            let read = xread.query_async::<Value>(connection);
            let reply = match tokio::time::timeout(bound, read).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(error)) => {
                    let cause = self.secrets.cause(&error);
                    tracing::warn!(%cause, stream = %self.log.stream, "Redis XREAD failed");
                    return Stopped::ConnectionLost;
                }
                Err(_) => {
                    tracing::warn!(stream = %self.log.stream, "Redis XREAD got no answer");
                    return Stopped::ConnectionLost;
                }
            };
            for entry in entries_of(reply) {
                match self.deliver(entry) {
                    Step::Next => {}
                    // The rest of this page is read again, from the cursor
                    // the reader moved back to.
                    Step::Reread => break,
                    Step::Gone => return Stopped::ServerGone,
                }
            }
        }
    }

    /// Moves the cursor past one stream entry and dispatches its positions
    /// in order, after telling subscribers of any positions lost before
    /// it.
    fn deliver(&self, entry: RawEntry) -> Step {
        let last = entry.last();
        let mut cursor = self.cursor.lock();
        let id = entry.id.as_deref().and_then(stream_id);
        // Read for the first time (not again after the cursor moved back).
        let first_read = id.is_none_or(|id| id > cursor.seen);
        if let Some(id) = id {
            cursor.seen = cursor.seen.max(id);
        }
        if let Some(id) = entry.id {
            cursor.from = id;
        }
        let (Some(seq), Some(log), Some(messages)) = (entry.seq, entry.log, entry.messages) else {
            drop(cursor);
            return self.reject(
                first_read,
                "not an entry of this log (missing log, m, or an id <seq>-0)",
            );
        };
        let Some(last) = last.filter(|_| Position::new(log, seq).is_some()) else {
            // Checked before any gap: a stray entry past the last sequence
            // number says nothing of what was trimmed.
            drop(cursor);
            return self.reject(first_read, "a sequence number out of range");
        };
        if log != cursor.log && cursor.adopted {
            // Reading a log just adopted from the stream's start: this is
            // an entry of a lost log that the stream still holds (its
            // meta hash was lost, not the stream), before the new log's
            // first. Not this log's: passed over.
            return self.step();
        }
        if log != cursor.log && cursor.left.contains(&log) {
            // A log this reader left for a newer one: its entries never
            // follow the newer log's. Written by another client.
            drop(cursor);
            return self.reject(first_read, "an entry of a log replaced since");
        }
        if log != cursor.log {
            // Another log where this log's next entry was due: the log was
            // renewed by another reader (Redis lost its last writes), or
            // started anew (its keys deleted or overwritten). The new log's
            // entries may start anywhere before this one, even below the
            // cursor (a stream written anew from 1): read the stream again
            // from its start, passing over the entries of other logs.
            cursor.adopt(log, 0);
            drop(cursor);
            tracing::error!(
                stream = %self.log.stream,
                node = self.local.node_name(),
                log = %format_args!("{log:04x}"),
                "the Redis log was renewed or replaced (Redis lost its last writes, or its keys were \
                 deleted or overwritten): subscribers are told; reading the new log from its start"
            );
            self.local.signal_gap_with(Gap::LogLost);
            self.local.set_log_head(log, 0);
            return if self.local.is_alive() {
                Step::Reread
            } else {
                Step::Gone
            };
        }
        if !cursor.adopted && last <= cursor.seq {
            drop(cursor);
            return self.reject(first_read, "an entry with a sequence number already read");
        }
        // The gap rule (`LogCursor`), but for a log just adopted, which
        // may start anywhere; positions read already (an entry overlapping
        // the cursor, which the log never writes) are passed over.
        let (skipped, read) = if cursor.adopted {
            (None, 0)
        } else {
            let read = cursor.seq.saturating_sub(seq - 1);
            (LogCursor::new(log, cursor.seq + 1).skip_to(seq), read)
        };
        cursor.seq = last;
        cursor.entry = entry.nonce.map(|nonce| (seq, nonce));
        cursor.adopted = false;
        drop(cursor);
        if let Some(gap) = skipped {
            tracing::warn!(
                stream = %self.log.stream,
                node = self.local.node_name(),
                %gap,
                "entries were trimmed from the Redis log before this node read them: subscribers are told"
            );
            self.local.signal_gap_with(gap);
        }
        let read = usize::try_from(read).unwrap_or(usize::MAX);
        for (seq, bytes) in (seq..).zip(messages).skip(read) {
            match Position::new(log, seq) {
                Some(position) if self.log.inbound.handle_logged(&bytes, position) => {}
                Some(_) => return Step::Gone,
                // Checked above: `seq <= last <= MAX_SEQ`.
                None => return self.reject(true, "a sequence number out of range"),
            }
        }
        Step::Next
    }

    /// [`Step::Next`] while the server lives.
    fn step(&self) -> Step {
        if self.local.is_alive() {
            Step::Next
        } else {
            Step::Gone
        }
    }

    /// Skips an entry that is not the log's: counted and logged when read
    /// for the first time, logged at DEBUG when read again.
    fn reject(&self, first_read: bool, why: &str) -> Step {
        if first_read {
            self.local.record_rejected();
            tracing::warn!(stream = %self.log.stream, node = self.local.node_name(), why, "skipped a Redis log entry");
        } else {
            tracing::debug!(stream = %self.log.stream, why, "skipped a Redis log entry again");
        }
        self.step()
    }
}
