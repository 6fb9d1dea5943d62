//! Durable delivery over Redis Streams: [`RedisConfig::durable`].
//!
//! The log is one stream, `{<namespace>}:log`, beside a hash,
//! `{<namespace>}:log-meta`, that holds the log's id and its last sequence
//! number (the braces keep both in one Redis Cluster slot). A node's
//! broadcasts made while its previous append is under way go together in
//! its next ([`Log::append`]): one script run that takes the next sequence
//! numbers, appends the batch as one stream entry `<first>-0` with fields
//! `log` (the log's id), `n` (a nonce), `t` (Redis's clock, ms) and one `m`
//! per envelope, in order (positions `first ..= first + count - 1`), and
//! trims the stream to the retention. Entry ids are the first positions
//! they hold, so a node finds any position with one `XREVRANGE .. COUNT 1`
//! (the entry holding it) and sees a trimmed range as a jump. An entry of
//! the earlier form, one envelope per entry, is the same with one `m`.
//!
//! Each node reads the stream with `XREAD BLOCK` on a connection of its
//! own, from the last entry it read, which it keeps across reconnects and
//! restarts of its receive task, and checks the log's head once per
//! blocking interval (the keys may be deleted or replaced under it).
//!
//! The keys are shared with every client of the Redis: the scripts take
//! from them only values the log writes ([`HEAD_LUA`]), and anything else
//! there starts a new log rather than wedging the append or the reader.
//!
//! Invariants: `seq` values of one log id are consecutive from 1 and
//! never reused; an entry holds 1 to [`BATCH_ENTRIES`] positions, and the
//! next entry of the log starts after its last; the reader's cursor only
//! moves forward within a log and every entry it moves past is either
//! dispatched (each of its positions) or counted as rejected; a gap is
//! signalled before the first entry after the loss it reports.

use std::collections::VecDeque;
use std::time::Duration;

use ::redis::{Script, Value};
use tokio::sync::oneshot;

use serde::de::DeserializeOwned;

use super::Publisher;
use crate::error::{Outcome, TransportError};
use crate::loom::sync::{Arc, LazyLock, Mutex};
use crate::net::{not_sent, Inbound};
use crate::position::{Gap, Position, Retention};
use crate::server::random_u64;
use crate::topic::Topic;
use crate::transport::{BoxFuture, DurableLog, LogCursor, LogHead, LogRead, Replay};

mod reader;

pub(crate) use reader::open;

/// What [`APPEND_SCRIPT`] and [`HEAD_SCRIPT`] begin with: the log's head,
/// read so that nothing another client wrote to the log's keys can wedge
/// it. KEYS: the stream, the meta hash.
///
/// `own_int` reads a value as the log writes its integers (decimal digits,
/// no sign, no leading zero, at most `max`), `nil` for anything else.
///
/// `own_head(fresh)` returns the log's id, its last sequence number, the
/// stream's last id (`0-0` when there is no stream), 1 when a log starts
/// now under the id `fresh` (0: the log goes on), and 1 when it found in
/// the keys something that is not the log's own (0: nothing). A log starts
/// now, after the stream's last entry, when the meta hash is missing or
/// holds a `log` that is not a 16-bit id or a `seq` that is not a
/// sequence number (written by something else: the log's id and end are
/// lost), and when the stream ends past the meta hash's `seq` (entries
/// appended by something else, or a meta hash lost and not the stream). A
/// key of another type, and a stream whose last id is past the largest
/// sequence number (to which the log can append nothing), are deleted and
/// a log starts at 1. Invariants on return: `seq + 1 <= MAX_SEQ`, and an
/// `XADD` of `<seq + 1>-0` succeeds (it is past the stream's last id). The
/// new log's id differs from the id it replaces when that was readable
/// (not when the meta hash was lost: then one in 65,536 is the same).
const HEAD_LUA: &str = r"
local MAX_SEQ = 281474976710655
local function own_int(value, max)
  if type(value) ~= 'string' or #value == 0 or #value > 15
    or not string.match(value, '^%d+$')
    or (#value > 1 and string.sub(value, 1, 1) == '0') then
    return nil
  end
  local n = tonumber(value)
  if n > max then return nil end
  return n
end
local function own_head(fresh)
  local foreign = 0
  local log = nil
  local seq = nil
  local meta = redis.call('TYPE', KEYS[2])['ok']
  if meta == 'hash' then
    local values = redis.call('HMGET', KEYS[2], 'log', 'seq')
    log = own_int(values[1], 65535)
    seq = own_int(values[2], MAX_SEQ - 1)
    if (values[1] and not log) or (values[2] and not seq) then foreign = 1 end
  elseif meta ~= 'none' then
    redis.call('DEL', KEYS[2])
    foreign = 1
  end
  local previous = log
  local top = '0-0'
  local top_seq = 0
  local kind = redis.call('TYPE', KEYS[1])['ok']
  if kind == 'stream' then
    local info = redis.call('XINFO', 'STREAM', KEYS[1])
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then top = info[i + 1] end
    end
    top_seq = own_int(string.match(top, '^(%d+)%-'), MAX_SEQ - 1)
    if not top_seq then
      redis.call('DEL', KEYS[1])
      foreign = 1
      top = '0-0'
      top_seq = 0
      log = nil
    end
  elseif kind ~= 'none' then
    redis.call('DEL', KEYS[1])
    foreign = 1
    log = nil
  end
  if log and seq and top_seq <= seq then
    return log, seq, top, 0, foreign
  end
  local id = tonumber(fresh)
  if id == previous then id = (id + 1) % 65536 end
  return id, top_seq, top, 1, foreign
end
";

/// Appends a batch of envelopes, in order, at consecutive positions, as
/// one stream entry. KEYS: the stream, the meta hash. ARGV: a log id for
/// a log that starts now, the most positions kept (0: no bound), the
/// oldest age kept in ms (0: no bound), the batch's nonce (a random number
/// that tells this entry from another given the same sequence number by a
/// Redis that lost its last writes), then the envelopes. Returns the log
/// id, the last position's sequence number, 1 if trimming worked (0: the
/// entry is in, trimming failed), 1 if the log's keys held something not
/// the log's own (see [`HEAD_LUA`]: a new log started), how many envelopes
/// were appended (the first ones: fewer when the batch holds more than
/// [`BATCH_ENTRIES`], or when the log reached the largest sequence number,
/// after which the next batch starts a new log)
/// and an empty string (kept for the reply's shape).
///
/// The entry is `<first>-0` with fields `log`, `n` (the nonce), `t`
/// (Redis's clock, ms), then one `m` per envelope, in order: positions
/// `first ..= first + count - 1`, the meta hash's `seq` the last. An entry
/// of the earlier form (one message per entry) is the same with one `m`.
///
/// The common case costs, per batch, a `TIME`, an `HMGET`, one `XADD`, an
/// `HSET`, and with a bound on positions an `XTRIM`:
/// the log's head is read by [`HEAD_LUA`] (with `XINFO STREAM`) only when
/// the meta hash's values are not the log's own or the `XADD` after its
/// `seq` fails (the stream ends past it, or is not a stream); an `XADD`
/// that fails then too is the script's error. The meta hash is written
/// only once the `XADD` succeeded, so a refused append uses no sequence
/// number (a key [`HEAD_LUA`] deleted stays deleted).
///
/// An entry holds at most [`BATCH_ENTRIES`] messages (a larger batch's
/// rest goes in the next, as at the largest sequence number), so trimming
/// by positions can keep the entry holding position `seq - max + 1`
/// without reading it: `XTRIM MINID ~` to `seq - max + 1 -
/// (BATCH_ENTRIES - 1)` keeps at least `max` positions and at most
/// `max + BATCH_ENTRIES - 1` (and, with `~`, what Redis keeps of a stream
/// node it cannot drop whole).
/// Age trimming looks at the 2
/// oldest entries per batch (one entry appended; reading an entry brings
/// all its envelopes into the script): each entry is trimmed once, so the
/// log keeps up with any rate of appends. An entry's `t`
/// counts only when it is a time the log could have written: an integer
/// no later than `now + age` (the allowance for the clocks of a failover's
/// replica). Any other entry counts as old: a stray entry, whatever its
/// `t`, holds trimming back for at most twice the age.
const APPEND_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_text = string.format('%d', now)
-- An entry holds at most BATCH_ENTRIES messages (count trimming counts
-- on it); the rest of a larger batch goes in the next.
local count = math.min(#ARGV - 4, BATCH_ENTRIES)
local function add(log, first, n)
  local args = {KEYS[1], string.format('%d-0', first),
    'log', log, 'n', ARGV[4], 't', now_text}
  for i = 1, n do
    args[#args + 1] = 'm'
    args[#args + 1] = ARGV[4 + i]
  end
  return redis.pcall('XADD', unpack(args))
end
local function failed(reply)
  return type(reply) == 'table' and reply.err ~= nil
end
-- How many of the batch fit before the largest sequence number (at least
-- one: `seq + 1 <= MAX_SEQ`); the rest goes in the next batch, which
-- starts a new log.
local function fitting(seq)
  return math.min(count, MAX_SEQ - seq)
end
local log, seq = nil, nil
local started, foreign = 0, 0
local values = redis.pcall('HMGET', KEYS[2], 'log', 'seq')
if not failed(values) then
  log = own_int(values[1], 65535)
  seq = own_int(values[2], MAX_SEQ - 1)
end
if not (log and seq and not failed(add(string.format('%d', log), seq + 1, fitting(seq)))) then
  local top
  log, seq, top, started, foreign = own_head(ARGV[1])
  local added = add(string.format('%d', log), seq + 1, fitting(seq))
  if failed(added) then
    return redis.error_reply(added.err)
  end
end
local log_text = string.format('%d', log)
local first = seq + 1
local n = fitting(seq)
seq = seq + n
if started == 1 then
  redis.call('HSET', KEYS[2], 'log', log_text, 'seq', string.format('%d', seq))
else
  redis.call('HSET', KEYS[2], 'seq', string.format('%d', seq))
end
local trimmed = 1
local max = tonumber(ARGV[2])
if max > 0 and seq - max + 1 > BATCH_ENTRIES then
  -- The entry holding position `seq - max + 1` starts at most
  -- BATCH_ENTRIES - 1 before it: kept, with everything after it.
  local keep = seq - max + 1 - (BATCH_ENTRIES - 1)
  local done = redis.pcall('XTRIM', KEYS[1], 'MINID', '~', string.format('%d-0', keep))
  if failed(done) then trimmed = 0 end
end
local age = tonumber(ARGV[3])
if age > 0 then
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 2)
  local cut = nil
  for _, entry in ipairs(oldest) do
    local at = nil
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == 't' then at = own_int(fields[i + 1], now + age) end
    end
    if at and at >= now - age then break end
    cut = tonumber(string.match(entry[1], '^(%d+)'))
  end
  if cut then
    local done = redis.pcall('XTRIM', KEYS[1], 'MINID', string.format('%d-0', cut + 1))
    if type(done) == 'table' and done.err then trimmed = 0 end
  end
end
return {log, seq, trimmed, foreign, n, ''}
";

/// The log's id, its last sequence number, the stream's last id and
/// whether something not the log's own was found ([`HEAD_LUA`]; KEYS and
/// ARGV[1] as [`APPEND_SCRIPT`]'s), starting a log if there is none: what
/// a reader starts from and checks after each reconnect and once per
/// blocking interval.
const HEAD_SCRIPT: &str = r"
local log, seq, top, started, foreign = own_head(ARGV[1])
if started == 1 then
  redis.call('HSET', KEYS[2], 'log', string.format('%d', log), 'seq', string.format('%d', seq))
end
return {log, seq, top, foreign}
";

/// Gives the log a new id if it still has `ARGV[2]` (KEYS as above;
/// ARGV[1] the new id): a reader found the log shorter than what it had
/// read (Redis lost its last writes), so the sequence numbers past the
/// new end will be reused and must not pass for the old entries. Returns
/// the log's id.
const RENEW_SCRIPT: &str = r"
local log = redis.call('HGET', KEYS[2], 'log')
if log == ARGV[2] then
  log = ARGV[1]
  redis.call('HSET', KEYS[2], 'log', log)
end
return log or ARGV[1]
";

static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "local BATCH_ENTRIES = {BATCH_ENTRIES}\n{HEAD_LUA}{APPEND_SCRIPT}"
    ))
});
pub(super) static HEAD: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{HEAD_LUA}{HEAD_SCRIPT}")));
pub(super) static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(RENEW_SCRIPT));

/// The most entries one `XREAD` or `XRANGE` returns: at most
/// `PAGE * BATCH_ENTRIES` messages (1,024, what a reader delivers before it
/// reads again: a burst its node's subscriptions must hold), and
/// `PAGE * BATCH_BYTES` envelope bytes (but for envelopes larger than a
/// batch's bytes, which go alone).
const PAGE: usize = 8;

/// A log id for a log that starts now.
fn fresh_log_id() -> u16 {
    // The low 16 bits of a random number.
    (random_u64() & 0xffff) as u16
}

/// The durable log of one namespace, as a node's transport sees it.
pub(crate) struct Log<M> {
    stream: Arc<str>,
    meta: Arc<str>,
    retention: Retention,
    response_timeout: Duration,
    publisher: Arc<Publisher>,
    inbound: Arc<Inbound<M>>,
    /// The appends waiting for the next batch.
    queue: Mutex<Queue>,
    /// Where batches run: the server's runtime.
    runtime: tokio::runtime::Handle,
}

/// How many batches one node has under way at most: one, so that the
/// appends made while a batch is under way wait and go together in the
/// next (under load, large batches: one script run for many entries).
const FLUSHERS: usize = 1;

/// The most envelopes one batch appends: one stream entry holds at most
/// this many ([`APPEND_SCRIPT`] enforces it; its count trimming counts on
/// it).
const BATCH_ENTRIES: usize = 128;
/// The most envelope bytes one batch carries (a larger envelope goes
/// alone).
const BATCH_BYTES: usize = 1 << 20;

/// The appends waiting to be sent, and how many tasks send them.
///
/// Invariant: `flushers` tasks ([`Log::flush`]) run, at most
/// [`FLUSHERS`]; each sends batches until `pending` is empty, then counts
/// itself out under the same lock. So an append pushed while one runs is
/// always taken by one, and one pushed while none runs starts one.
#[derive(Default)]
struct Queue {
    pending: VecDeque<Waiting>,
    flushers: usize,
    next_id: u64,
}

/// One append waiting for its batch.
struct Waiting {
    /// Tells this append from the others in the queue, to withdraw it.
    id: u64,
    bytes: Vec<u8>,
    done: oneshot::Sender<Result<(), TransportError>>,
}

/// What a batch's script run returned.
struct Appended {
    /// How many of the batch's first entries were appended.
    added: usize,
    trimmed: bool,
    foreign: bool,
    /// Why the entry after the appended ones was not (empty: it was not
    /// tried: the log ran out of sequence numbers, and it goes in the
    /// next batch).
    stopped: String,
}

/// Counts a [`Log::flush`] out if it ends without doing so itself (its
/// task dropped with the runtime, or a panic).
struct FlushGuard<M> {
    log: Arc<Log<M>>,
    armed: bool,
}

impl<M> Drop for FlushGuard<M> {
    fn drop(&mut self) {
        if self.armed {
            self.log.queue.lock().flushers -= 1;
        }
    }
}

impl<M> Log<M>
where
    M: DeserializeOwned + Send + Sync + 'static,
{
    /// Appends one encoded envelope: `Ok` once Redis has it in the log.
    ///
    /// Appends wait in a queue while a batch is under way and go together
    /// in the next one, one script run: under load, Redis runs one script
    /// for many entries. The entries of one batch are consecutive, in the
    /// order of their appends. An append waits at most `connect_timeout +
    /// response_timeout` (the publisher's bound), batch included: one still
    /// queued then is withdrawn (certainly not sent); one whose batch was
    /// sent has an unknown outcome.
    pub(crate) async fn append(self: &Arc<Self>, bytes: &[u8]) -> Result<(), TransportError> {
        let (done, result) = oneshot::channel();
        let (id, start) = {
            let mut queue = self.queue.lock();
            let id = queue.next_id;
            queue.next_id += 1;
            queue.pending.push_back(Waiting {
                id,
                bytes: bytes.to_vec(),
                done,
            });
            let start = queue.flushers < FLUSHERS;
            if start {
                queue.flushers += 1;
            }
            (id, start)
        };
        if start {
            // The guard is made before the task: a task dropped unpolled
            // (its runtime shutting down) still gives its place back.
            self.runtime.spawn(Self::flush(FlushGuard {
                log: Arc::clone(self),
                armed: true,
            }));
        }
        let bound = self.publisher.connect_timeout + self.publisher.response_timeout;
        match tokio::time::timeout(bound, result).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(TransportError::msg(
                "the Redis append was dropped with its runtime".to_owned(),
            )),
            Err(_) => {
                let mut queue = self.queue.lock();
                let queued = queue.pending.iter().position(|waiting| waiting.id == id);
                let withdrawn = queued.and_then(|at| queue.pending.remove(at)).is_some();
                drop(queue);
                let error =
                    TransportError::msg(format!("Redis XADD got no answer within {bound:?}"));
                Err(if withdrawn {
                    error.with_outcome(Outcome::NotSent)
                } else {
                    error
                })
            }
        }
    }

    /// Sends the queued appends, batch after batch, until none is left.
    async fn flush(mut guard: FlushGuard<M>) {
        let this = Arc::clone(&guard.log);
        loop {
            let mut batch = {
                let mut queue = this.queue.lock();
                if queue.pending.is_empty() {
                    queue.flushers -= 1;
                    guard.armed = false;
                    return;
                }
                let mut bytes = 0;
                let mut taken = 0;
                for waiting in &queue.pending {
                    bytes += waiting.bytes.len();
                    if taken == BATCH_ENTRIES || (taken > 0 && bytes > BATCH_BYTES) {
                        break;
                    }
                    taken += 1;
                }
                queue.pending.drain(..taken).collect::<Vec<_>>()
            };
            // Callers that gave up (timed out or dropped) before their
            // batch was sent leave their entry out.
            batch.retain(|waiting| !waiting.done.is_closed());
            if batch.is_empty() {
                continue;
            }
            let appended = this.append_batch(&batch).await;
            let mut rest = batch.into_iter();
            match appended {
                Ok(appended) => {
                    if appended.foreign {
                        this.found_foreign();
                    }
                    if !appended.trimmed {
                        tracing::warn!(stream = %this.stream, "appended to the Redis log, but trimming it failed: it may outgrow its retention");
                    }
                    for waiting in rest.by_ref().take(appended.added) {
                        // A caller that gave up meanwhile: nobody to tell.
                        let _ = waiting.done.send(Ok(()));
                    }
                    if appended.stopped.is_empty() {
                        // Not tried: first in the next batch, in order.
                        let mut queue = this.queue.lock();
                        for waiting in rest.rev() {
                            queue.pending.push_front(waiting);
                        }
                    } else {
                        for waiting in rest {
                            let _ = waiting.done.send(Err(not_sent(format!(
                                "Redis refused the XADD: {}",
                                appended.stopped
                            ))));
                        }
                    }
                }
                Err(error) => {
                    for waiting in rest {
                        let _ =
                            waiting.done.send(Err(TransportError::msg(error.to_string())
                                .with_outcome(error.outcome())));
                    }
                }
            }
        }
    }

    /// Runs [`APPEND_SCRIPT`] once for `batch`.
    async fn append_batch(&self, batch: &[Waiting]) -> Result<Appended, TransportError> {
        // Redis integers are signed: a larger bound is no bound.
        let max_entries = self
            .retention
            .entries_limit()
            .map_or(0, |entries| entries.min(i64::MAX as u64));
        let max_age = self
            .retention
            .age_limit()
            .map_or(0, |age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        let mut invocation = APPEND.key(&*self.stream);
        invocation
            .key(&*self.meta)
            .arg(fresh_log_id())
            .arg(max_entries)
            .arg(max_age)
            .arg(random_u64());
        for waiting in batch {
            invocation.arg(&waiting.bytes);
        }
        let invocation = &invocation;
        let appended = Mutex::new(None);
        let appended_ref = &appended;
        self.publisher
            .send("XADD", |mut connection| async move {
                let (_, _, trimmed, foreign, added, stopped): (u16, u64, u8, u8, u64, String) =
                    invocation.invoke_async(&mut connection).await?;
                *appended_ref.lock() = Some(Appended {
                    added: usize::try_from(added).unwrap_or(usize::MAX),
                    trimmed: trimmed == 1,
                    foreign: foreign == 1,
                    stopped,
                });
                Ok(())
            })
            .await?;
        appended.into_inner().ok_or_else(|| {
            // `send` returns `Ok` only after the closure stored the reply.
            TransportError::msg("the Redis append's reply was lost".to_owned())
        })
    }

    /// Counts and logs what [`HEAD_LUA`] found in the log's keys that was
    /// not the log's own (and replaced, starting a new log).
    fn found_foreign(&self) {
        self.inbound.local.record_rejected();
        tracing::warn!(
            stream = %self.stream,
            meta = %self.meta,
            "the Redis log's keys held values that are not the log's own (written by another client): \
             they were replaced and a new log started; subscribers are told the log was lost"
        );
    }

    /// Where the log ends on Redis now.
    pub(crate) async fn head(&self) -> Result<LogHead, TransportError> {
        let mut connection = self.publisher.reader().await?;
        let mut hmget = ::redis::cmd("HMGET");
        hmget.arg(&*self.meta).arg("log").arg("seq");
        let read = hmget.query_async::<(Option<String>, Option<String>)>(&mut connection);
        let (log, seq) = tokio::time::timeout(self.response_timeout, read)
            .await
            .map_err(|_| {
                TransportError::msg(format!(
                    "Redis HMGET got no answer within {:?}",
                    self.response_timeout
                ))
            })?
            .map_err(|error| {
                TransportError::msg(format!(
                    "Redis HMGET failed: {}",
                    self.publisher.secrets.cause(&error)
                ))
            })?;
        Ok(match log.and_then(|log| log.parse().ok()) {
            Some(log) => LogHead::At {
                log,
                seq: seq.and_then(|seq| seq.parse().ok()).unwrap_or(0),
            },
            None => LogHead::Missing,
        })
    }

    /// Runs one `XRANGE` or `XREVRANGE` within the response timeout.
    async fn range(
        &self,
        connection: &mut ::redis::aio::MultiplexedConnection,
        command: &::redis::Cmd,
    ) -> Result<Value, TransportError> {
        tokio::time::timeout(
            self.response_timeout,
            command.query_async::<Value>(connection),
        )
        .await
        .map_err(|_| {
            TransportError::msg(format!(
                "Redis XRANGE got no answer within {:?}",
                self.response_timeout
            ))
        })?
        .map_err(|error| {
            TransportError::msg(format!(
                "Redis XRANGE failed: {}",
                self.publisher.secrets.cause(&error)
            ))
        })
    }

    /// See [`DurableLog::replay`].
    pub(crate) async fn replay(
        &self,
        after: Position,
        through: Position,
        topics: &[Topic],
    ) -> Result<Replay<M>, TransportError> {
        let Some(missing) = after.entries_until(through).filter(|n| *n > 0) else {
            return Ok(Replay::new(None, Vec::new()));
        };
        if missing > self.retention.replay_limit() {
            return Ok(Replay::new(Some(Gap::ReplayLimit { missing }), Vec::new()));
        }
        let mut connection = self.publisher.reader().await?;
        let mut gap = None;
        let mut entries = Vec::new();
        // The gap rule: `LogCursor`.
        let mut cursor = LogCursor::after(after);
        // The entry holding the first position asked for may start before
        // it: the last entry at or before it, when that is the log's and
        // reaches it.
        let mut from = format!("{}-0", cursor.next());
        let holding = self
            .range(
                &mut connection,
                ::redis::cmd("XREVRANGE")
                    .arg(&*self.stream)
                    .arg(&from)
                    .arg("-")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
        if let Some(entry) = entries_of(holding).pop() {
            if let (Some(id), Some(last)) = (&entry.id, entry.last()) {
                if entry.seq.is_some() && last >= cursor.next() {
                    from.clone_from(id);
                }
            }
        }
        let end = format!("{}-0", through.seq());
        while cursor.next() <= through.seq() {
            let page = self
                .range(
                    &mut connection,
                    ::redis::cmd("XRANGE")
                        .arg(&*self.stream)
                        .arg(&from)
                        .arg(&end)
                        .arg("COUNT")
                        .arg(PAGE),
                )
                .await?;
            let raw = entries_of(page);
            let Some(last_id) = raw.last().and_then(|entry| entry.id.clone()) else {
                break;
            };
            // The next page starts after this one's last entry.
            from = format!("({last_id}");
            for entry in raw {
                let Some(seq) = entry.seq else {
                    // Not one of the log's (written by hand): read past it.
                    if let Some(major) = entry.major {
                        cursor = LogCursor::new(after.log(), cursor.next().max(major + 1));
                    }
                    continue;
                };
                let Some(log) = entry.log else {
                    return Ok(Replay::new(Some(Gap::LogLost), Vec::new()));
                };
                let messages: Vec<Option<Vec<u8>>> = match (entry.last(), entry.messages) {
                    (Some(_), Some(messages)) => messages.into_iter().map(Some).collect(),
                    // Malformed: its first position is read past, as an
                    // entry of the earlier form.
                    _ => vec![None],
                };
                for (seq, bytes) in (seq..).zip(messages) {
                    if seq > through.seq() {
                        break;
                    }
                    match cursor.read(log, seq) {
                        LogRead::Next => {}
                        LogRead::Read => continue,
                        // The range belongs to a log that was lost since.
                        LogRead::After(Gap::LogLost) => {
                            return Ok(Replay::new(Some(Gap::LogLost), Vec::new()))
                        }
                        // Trimmed before the range was read (or, rarely,
                        // while it was: the gap then stands for both).
                        LogRead::After(lost) => {
                            gap = Some(gap.map_or(lost, |gap: Gap| gap.merge(lost)));
                        }
                    }
                    let (Some(position), Some(bytes)) = (Position::new(after.log(), seq), bytes)
                    else {
                        continue;
                    };
                    if let Some((message, copies)) = self.inbound.replayed(&bytes, topics) {
                        entries.push((position, message, copies));
                    }
                }
            }
        }
        if let Some(lost) = cursor.skip_through(through.seq()) {
            // The end of the range is gone too: the log was trimmed past
            // it, or lost.
            gap = Some(gap.map_or(lost, |gap: Gap| gap.merge(lost)));
        }
        if gap.is_some() {
            // Entries missing: trimmed, unless the log itself was lost
            // (and this node's reader has not reconnected to see it yet).
            match self.head().await? {
                LogHead::At { log, .. } if log == after.log() => {}
                _ => return Ok(Replay::new(Some(Gap::LogLost), Vec::new())),
            }
        }
        Ok(Replay::with_copies(gap, entries))
    }
}

/// The Redis log as the server reads it.
impl<M> DurableLog<M> for Log<M>
where
    M: DeserializeOwned + Send + Sync + 'static,
{
    fn log_head(&self) -> BoxFuture<'_, Result<LogHead, TransportError>> {
        Box::pin(self.head())
    }

    fn replay_limit(&self) -> Option<u64> {
        Some(self.retention.replay_limit())
    }

    fn replay<'a>(
        &'a self,
        after: Position,
        through: Position,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, Result<Replay<M>, TransportError>>
    where
        M: Send + 'a,
    {
        Box::pin(Log::replay(self, after, through, topics))
    }
}

/// One stream entry as read, each part `None` when missing or malformed.
struct RawEntry {
    /// The entry's id, to read past it whatever it holds.
    id: Option<String>,
    /// The first position's sequence number, from an id of the form
    /// `<seq>-0`.
    seq: Option<u64>,
    /// The id's first part, whatever the second.
    major: Option<u64>,
    /// The entry's nonce, field `n`.
    nonce: Option<u64>,
    log: Option<u16>,
    /// The envelopes, fields `m` in order: positions `seq ..`. `None` when
    /// there is none, or one is not a bulk string (not the log's entry).
    messages: Option<Vec<Vec<u8>>>,
}

impl RawEntry {
    /// The last position's sequence number (`None`: not the log's entry,
    /// or past the largest sequence number a position holds).
    fn last(&self) -> Option<u64> {
        let count = u64::try_from(self.messages.as_ref()?.len()).ok()?;
        let last = self.seq?.checked_add(count - 1)?;
        (last <= Position::MAX_SEQ).then_some(last)
    }
}

/// The entries of an `XRANGE` reply, or of the one stream of an `XREAD`
/// reply (RESP2 arrays or RESP3 maps); nothing for a timed-out `XREAD`.
fn entries_of(reply: Value) -> Vec<RawEntry> {
    let list = match reply {
        Value::Array(items) => items,
        Value::Map(mut pairs) => match pairs.pop() {
            Some((_, Value::Array(entries))) => return entries.into_iter().map(entry).collect(),
            _ => return Vec::new(),
        },
        _ => return Vec::new(),
    };
    // An XREAD reply is one [key, entries] pair per stream; an XRANGE
    // reply is the entries, each [id, fields].
    let is_xread = matches!(list.first(), Some(Value::Array(pair))
        if matches!(pair.get(1), Some(Value::Array(inner)) if matches!(inner.first(), Some(Value::Array(_)))));
    if is_xread {
        return list
            .into_iter()
            .flat_map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => match pair.pop() {
                    Some(Value::Array(entries)) => entries,
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            })
            .map(entry)
            .collect();
    }
    list.into_iter().map(entry).collect()
}

fn text(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

fn entry(value: Value) -> RawEntry {
    let mut raw = RawEntry {
        id: None,
        seq: None,
        major: None,
        nonce: None,
        log: None,
        messages: None,
    };
    // Whether every `m` field is a bulk string.
    let mut well_formed = true;
    let mut messages = Vec::new();
    let Value::Array(parts) = value else {
        return raw;
    };
    let mut parts = parts.into_iter();
    let (Some(id), Some(Value::Array(fields))) = (parts.next(), parts.next()) else {
        return raw;
    };
    let id = text(&id).and_then(|id| std::str::from_utf8(id).ok());
    raw.seq = id
        .and_then(|id| id.strip_suffix("-0"))
        .and_then(|seq| seq.parse().ok());
    raw.major = id
        .and_then(|id| id.split_once('-'))
        .and_then(|(major, _)| major.parse().ok());
    raw.id = id.map(str::to_owned);
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match text(&name) {
            Some(b"log") => {
                raw.log = text(&value)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse().ok());
            }
            Some(b"n") => {
                raw.nonce = text(&value)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse().ok());
            }
            Some(b"m") => match value {
                Value::BulkString(bytes) => messages.push(bytes),
                _ => well_formed = false,
            },
            _ => {}
        }
    }
    if well_formed && !messages.is_empty() {
        raw.messages = Some(messages);
    }
    raw
}
