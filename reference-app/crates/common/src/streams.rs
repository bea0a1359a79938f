//! At-least-once Redis Streams consumers: consumer groups, XACK after the
//! handler reaches a final state, acknowledged entries trimmed from the
//! stream (each stream has exactly one consuming group), own pending entries
//! re-read at start, pending entries of crashed consumers reclaimed with
//! XAUTOCLAIM. Messages sharing a key (e.g. a delivery id) are handled
//! strictly in stream order: [`run_consumer`] handles messages one by one
//! (many at once). [`run_batch_consumer`] applies whole batches exactly once
//! with an offset of its own, stored atomically with each batch's effects.
use crate::server::runtime;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// One stream entry.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub fields: HashMap<String, String>,
}

impl Message {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.fields.get(k).map(|s| s.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub stream: String,
    pub group: String,
    pub consumer: String,
    pub batch: usize,
    pub concurrency: usize,
    pub claim_idle: Duration,
    pub key_field: Option<String>,
}

impl ConsumerConfig {
    /// Defaults overridable with `CONSUMER_NAME`, `CONSUMER_BATCH`,
    /// `CONSUMER_CONCURRENCY`, `CLAIM_IDLE_MS`.
    pub fn from_env(stream: &str, group: &str, key_field: Option<&str>) -> Self {
        let consumer = std::env::var("CONSUMER_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| format!("consumer-{}", std::process::id()));
        Self {
            stream: stream.into(),
            group: group.into(),
            consumer,
            batch: crate::config::env_or("CONSUMER_BATCH", 128),
            concurrency: crate::config::env_or("CONSUMER_CONCURRENCY", 256),
            claim_idle: Duration::from_millis(crate::config::env_or("CLAIM_IDLE_MS", 30_000)),
            key_field: key_field.map(str::to_string),
        }
    }
}

fn to_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Parse `[[id, [k, v, ...]], ...]` (entries whose fields are nil are skipped).
pub fn parse_entries(v: &Value) -> Vec<Message> {
    let mut out = Vec::new();
    if let Value::Array(items) = v {
        for it in items {
            if let Value::Array(pair) = it {
                if pair.len() == 2 {
                    if let (Some(id), Value::Array(kv)) = (to_string(&pair[0]), &pair[1]) {
                        let mut fields = HashMap::new();
                        for c in kv.chunks(2) {
                            if let (Some(k), Some(v)) = (c.first().and_then(to_string), c.get(1).and_then(to_string)) {
                                fields.insert(k, v);
                            }
                        }
                        out.push(Message { id, fields });
                    }
                }
            }
        }
    }
    out
}

/// Parse an XREADGROUP reply (RESP2: `[[stream, entries]]` or nil).
fn parse_read(v: &Value) -> Vec<Message> {
    match v {
        Value::Array(streams) => streams
            .iter()
            .flat_map(|s| match s {
                Value::Array(p) if p.len() == 2 => parse_entries(&p[1]),
                _ => vec![],
            })
            .collect(),
        Value::Map(m) => m.iter().flat_map(|(_, e)| parse_entries(e)).collect(),
        _ => vec![],
    }
}

type Queues = HashMap<String, VecDeque<(Message, OwnedSemaphorePermit)>>;

struct Dispatcher<H> {
    cfg: ConsumerConfig,
    ack_tx: mpsc::UnboundedSender<String>,
    handler: Arc<H>,
    queues: Mutex<Queues>,
    inflight: Mutex<HashSet<String>>,
}

impl<H, Fut> Dispatcher<H>
where
    H: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    fn is_inflight(&self, id: &str) -> bool {
        self.inflight.lock().unwrap().contains(id)
    }

    fn dispatch(self: &Arc<Self>, msg: Message, permit: OwnedSemaphorePermit) {
        if !self.inflight.lock().unwrap().insert(msg.id.clone()) {
            return;
        }
        let key = self
            .cfg
            .key_field
            .as_deref()
            .and_then(|f| msg.get(f))
            .unwrap_or(&msg.id)
            .to_string();
        let mut q = self.queues.lock().unwrap();
        if let Some(queue) = q.get_mut(&key) {
            queue.push_back((msg, permit));
            return;
        }
        q.insert(key.clone(), VecDeque::new());
        drop(q);
        let me = self.clone();
        tokio::spawn(async move {
            let mut next = Some((msg, permit));
            while let Some((m, p)) = next.take() {
                let id = m.id.clone();
                let done = (me.handler)(m).await;
                if done {
                    me.ack(&id).await;
                }
                me.inflight.lock().unwrap().remove(&id);
                drop(p);
                let mut q = me.queues.lock().unwrap();
                match q.get_mut(&key).and_then(|v| v.pop_front()) {
                    Some(n) => next = Some(n),
                    None => {
                        q.remove(&key);
                    }
                }
            }
        });
    }

    async fn ack(&self, id: &str) {
        if self.ack_tx.send(id.to_string()).is_err() {
            tracing::warn!(msg_id = id, "ack channel closed; message will be redelivered");
        }
    }
}

/// Acknowledge in batches: whatever accumulated while the previous batch was
/// in flight goes out in one `XACK`. A crash before the flush only means
/// redelivery, which the handlers tolerate (idempotent by id). Acknowledged
/// entries are removed from the stream by [`spawn_trim`].
async fn ack_loop(mgr: ConnectionManager, stream: String, group: String, mut rx: mpsc::UnboundedReceiver<String>) {
    let mut buf: Vec<String> = Vec::with_capacity(512);
    while let Some(first) = rx.recv().await {
        buf.push(first);
        while buf.len() < 1024 {
            match rx.try_recv() {
                Ok(id) => buf.push(id),
                Err(_) => break,
            }
        }
        let mut c = mgr.clone();
        if let Err(e) = ack(&mut c, &stream, &group, &buf).await {
            tracing::warn!(error = %e, count = buf.len(), "ack failed; messages will be redelivered");
        }
        buf.clear();
    }
}

async fn ack(c: &mut ConnectionManager, stream: &str, group: &str, ids: &[String]) -> redis::RedisResult<()> {
    redis::cmd("XACK").arg(stream).arg(group).arg(ids).query_async(c).await
}

/// The oldest entry the group still needs: its oldest pending entry, or the
/// one after the last it was given, whichever is older. Both are read in one
/// transaction, so an entry delivered in between cannot be mistaken for an
/// acknowledged one. Everything older has been acknowledged.
async fn oldest_needed(c: &mut ConnectionManager, stream: &str, group: &str) -> redis::RedisResult<Option<String>> {
    let (groups, pending): (Value, Value) = redis::pipe()
        .atomic()
        .cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(c)
        .await?;
    let Some(last) = last_delivered(&groups, group) else {
        return Ok(None);
    };
    let oldest_pending = match &pending {
        Value::Array(p) if matches!(p.first(), Some(Value::Int(n)) if *n > 0) => p.get(1).and_then(to_string),
        _ => None,
    };
    Ok(Some(match oldest_pending {
        Some(p) if stream_id(&p) < stream_id(&last) => p,
        _ => last,
    }))
}

/// `last-delivered-id` of `group` in an `XINFO GROUPS` reply.
fn last_delivered(groups: &Value, group: &str) -> Option<String> {
    let Value::Array(groups) = groups else { return None };
    for g in groups {
        let fields: Vec<(String, Option<String>)> = match g {
            Value::Array(kv) => kv
                .chunks(2)
                .filter_map(|c| Some((to_string(c.first()?)?, c.get(1).and_then(to_string))))
                .collect(),
            Value::Map(kv) => kv
                .iter()
                .filter_map(|(k, v)| Some((to_string(k)?, to_string(v))))
                .collect(),
            _ => continue,
        };
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).and_then(|(_, v)| v.clone());
        if get("name").as_deref() == Some(group) {
            return get("last-delivered-id");
        }
    }
    None
}

/// Sort key of a stream entry id `<ms>-<seq>`.
pub fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// What a stream may be trimmed below.
enum TrimFloor {
    /// The oldest entry a consumer group still needs (see [`oldest_needed`]).
    Group(String),
    /// An offset consumer's stored offset: everything before it was applied.
    Offset(String),
}

impl TrimFloor {
    async fn get(&self, c: &mut ConnectionManager, stream: &str) -> redis::RedisResult<Option<String>> {
        match self {
            Self::Group(group) => oldest_needed(c, stream, group).await,
            Self::Offset(key) => redis::cmd("GET").arg(key).query_async(c).await,
        }
    }
}

/// Remove handled entries from the stream every `STREAM_TRIM_MS` (1000):
/// `XTRIM MINID ~` below `floor`, which frees whole nodes (cheap) instead of
/// deleting entries one by one. Each stream has exactly one consumer.
fn spawn_trim(mgr: ConnectionManager, stream: String, floor: TrimFloor) {
    let every = Duration::from_millis(crate::config::env_or("STREAM_TRIM_MS", 1000));
    let mut shutdown = runtime().shutdown_rx();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            let mut c = mgr.clone();
            let res = async {
                let Some(min) = floor.get(&mut c, &stream).await? else {
                    return Ok(());
                };
                redis::cmd("XTRIM")
                    .arg(&stream)
                    .arg("MINID")
                    .arg("~")
                    .arg(&min)
                    .query_async::<()>(&mut c)
                    .await
            }
            .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, stream = %stream, "stream trim failed");
            }
        }
    });
}

/// Create the consumer group (from the start of the stream) if missing.
pub async fn ensure_group(mgr: &mut ConnectionManager, stream: &str, group: &str) -> redis::RedisResult<()> {
    let r: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(mgr)
        .await;
    match r {
        Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
        other => other,
    }
}

async fn reader_conn(client: &redis::Client) -> MultiplexedConnection {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(10));
    loop {
        match client.get_multiplexed_async_connection_with_config(&cfg).await {
            Ok(c) => return c,
            Err(e) => {
                tracing::warn!(error = %e, "stream reader cannot connect; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Where the next entries come from: first our own pending entries (we crashed
/// or were restarted with the same name), then, every `claim_idle / 2`,
/// entries idle for longer than `claim_idle` in crashed consumers' lists
/// (XAUTOCLAIM), otherwise new entries (XREADGROUP `>`, blocking up to 500 ms).
struct Reader {
    cfg: ConsumerConfig,
    client: redis::Client,
    conn: MultiplexedConnection,
    own_cursor: Option<String>,
    last_claim: Instant,
}

impl Reader {
    async fn start(client: redis::Client, mut mgr: ConnectionManager, cfg: &ConsumerConfig) -> Self {
        while let Err(e) = ensure_group(&mut mgr, &cfg.stream, &cfg.group).await {
            tracing::warn!(error = %e, "cannot create consumer group; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tracing::info!(stream = %cfg.stream, group = %cfg.group, consumer = %cfg.consumer, "consumer started");
        spawn_trim(mgr, cfg.stream.clone(), TrimFloor::Group(cfg.group.clone()));
        Self {
            cfg: cfg.clone(),
            conn: reader_conn(&client).await,
            client,
            own_cursor: Some("0".to_string()),
            last_claim: Instant::now(),
        }
    }

    /// The next entries; `skip` filters reclaimed entries already being handled.
    async fn next(&mut self, skip: impl Fn(&str) -> bool) -> Vec<Message> {
        match self.read(skip).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, stream = %self.cfg.stream, "stream read failed; reconnecting");
                tokio::time::sleep(Duration::from_millis(300)).await;
                self.conn = reader_conn(&self.client).await;
                Vec::new()
            }
        }
    }

    async fn read(&mut self, skip: impl Fn(&str) -> bool) -> redis::RedisResult<Vec<Message>> {
        let cfg = &self.cfg;
        if let Some(cur) = self.own_cursor.clone() {
            let v: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&cfg.group)
                .arg(&cfg.consumer)
                .arg("COUNT")
                .arg(cfg.batch)
                .arg("STREAMS")
                .arg(&cfg.stream)
                .arg(&cur)
                .query_async(&mut self.conn)
                .await?;
            let msgs = parse_read(&v);
            self.own_cursor = msgs.last().map(|m| m.id.clone());
            if self.own_cursor.is_some() {
                tracing::info!(count = msgs.len(), "re-reading own pending entries");
            }
            return Ok(msgs);
        }
        let claim_every = (cfg.claim_idle / 2).max(Duration::from_millis(200));
        if self.last_claim.elapsed() >= claim_every {
            self.last_claim = Instant::now();
            let mut all = Vec::new();
            let mut start = "0-0".to_string();
            for _ in 0..16 {
                let v: Value = redis::cmd("XAUTOCLAIM")
                    .arg(&cfg.stream)
                    .arg(&cfg.group)
                    .arg(&cfg.consumer)
                    .arg(cfg.claim_idle.as_millis() as u64)
                    .arg(&start)
                    .arg("COUNT")
                    .arg(cfg.batch)
                    .query_async(&mut self.conn)
                    .await?;
                let Value::Array(parts) = v else { break };
                let next = parts.first().and_then(to_string).unwrap_or_else(|| "0-0".into());
                let msgs: Vec<Message> = parts.get(1).map(parse_entries).unwrap_or_default();
                all.extend(msgs.into_iter().filter(|m| !skip(&m.id)));
                if next == "0-0" {
                    break;
                }
                start = next;
            }
            if !all.is_empty() {
                tracing::info!(count = all.len(), "reclaimed pending entries");
                runtime()
                    .metrics
                    .add("stream_reclaimed_total", &[("stream", &cfg.stream)], all.len() as u64);
                return Ok(all);
            }
        }
        let v: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&cfg.group)
            .arg(&cfg.consumer)
            .arg("COUNT")
            .arg(cfg.batch)
            .arg("BLOCK")
            .arg(500)
            .arg("STREAMS")
            .arg(&cfg.stream)
            .arg(">")
            .query_async(&mut self.conn)
            .await?;
        Ok(parse_read(&v))
    }
}

/// Run a consumer until shutdown. `handler` returns `true` when the message
/// reached a final state (it is then acknowledged), `false` to leave it
/// pending (it is retried after `claim_idle`). Up to `concurrency` messages
/// are handled at once, those sharing a key one after the other.
pub async fn run_consumer<H, Fut>(client: redis::Client, mgr: ConnectionManager, cfg: ConsumerConfig, handler: H)
where
    H: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let mut reader = Reader::start(client, mgr.clone(), &cfg).await;
    let sem = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    tokio::spawn(ack_loop(mgr, cfg.stream.clone(), cfg.group.clone(), ack_rx));
    let d = Arc::new(Dispatcher {
        cfg: cfg.clone(),
        ack_tx,
        handler: Arc::new(handler),
        queues: Mutex::default(),
        inflight: Mutex::default(),
    });
    let mut shutdown = runtime().shutdown_rx();
    'read: loop {
        if *shutdown.borrow() {
            break;
        }
        for m in reader.next(|id| d.is_inflight(id)).await {
            if d.is_inflight(&m.id) {
                continue;
            }
            let permit = tokio::select! {
                p = sem.clone().acquire_owned() => p.expect("semaphore"),
                _ = shutdown.changed() => break 'read,
            };
            runtime()
                .metrics
                .inc("stream_messages_total", &[("stream", &cfg.stream)]);
            d.dispatch(m, permit);
        }
    }
    tracing::info!(stream = %cfg.stream, "consumer stopped reading");
}

/// Lua prologue of a batch handler's script (see [`run_batch_consumer`]):
/// ARGV[1] is the offset key, ARGV[2] the offset the batch starts after,
/// ARGV[3] its last entry id. If the stored offset is not ARGV[2] the batch
/// was applied already (by another instance, or before a lost reply) and the
/// script returns `'moved'` without doing anything; otherwise it stores
/// ARGV[3] and goes on, so the batch and the new offset commit together.
pub const OFFSET_PRELUDE: &str = r#"
if (redis.call('GET', ARGV[1]) or '0-0') ~= ARGV[2] then return 'moved' end
redis.call('SET', ARGV[1], ARGV[3])
"#;

/// The step a batch moves a consumer's offset: pass [`OffsetStep::args`]
/// first to a script that starts with [`OFFSET_PRELUDE`].
#[derive(Debug, Clone)]
pub struct OffsetStep {
    pub key: String,
    pub from: String,
    pub to: String,
}

impl OffsetStep {
    /// Add ARGV[1..=3] to a script call.
    pub fn args(&self, call: &mut redis::ScriptInvocation<'_>) {
        call.arg(&self.key).arg(&self.from).arg(&self.to);
    }
}

/// What became of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Applied together with the new offset.
    Applied,
    /// The offset had moved (the script answered `'moved'`): nothing applied.
    Moved,
}

impl BatchOutcome {
    /// Map a script's reply.
    pub fn from_reply(reply: &str) -> Self {
        if reply == "moved" {
            Self::Moved
        } else {
            Self::Applied
        }
    }
}

async fn stored_offset(c: &mut ConnectionManager, key: &str) -> String {
    loop {
        match redis::cmd("GET").arg(key).query_async::<Option<String>>(c).await {
            Ok(o) => return o.unwrap_or_else(|| "0-0".into()),
            Err(e) => {
                tracing::warn!(error = %e, key, "cannot read stream offset; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn read_after(
    conn: &mut MultiplexedConnection,
    cfg: &ConsumerConfig,
    after: &str,
) -> redis::RedisResult<Vec<Message>> {
    let v: Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(cfg.batch)
        .arg("BLOCK")
        .arg(500)
        .arg("STREAMS")
        .arg(&cfg.stream)
        .arg(after)
        .query_async(conn)
        .await?;
    Ok(parse_read(&v))
}

/// Run a consumer that applies whole batches exactly once, in stream order,
/// keeping its own offset instead of a consumer group: the offset (key
/// `<group>:offset:<stream>`) is stored by the handler's script in the same
/// atomic step as the batch's effects (see [`OFFSET_PRELUDE`]), so a crash
/// either applied a batch and its offset or neither. Several instances (a
/// canary next to the stable version) may run: each batch is applied by the
/// first whose script sees the offset it started from; the others re-read the
/// offset and go on from there. The next batch is read while the current one
/// is applied. On `Err` the batch is retried after a pause.
pub async fn run_batch_consumer<H, Fut>(client: redis::Client, mgr: ConnectionManager, cfg: ConsumerConfig, handler: H)
where
    H: Fn(Vec<Message>, OffsetStep) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<BatchOutcome, String>> + Send + 'static,
{
    let key = format!("{}:offset:{}", cfg.group, cfg.stream);
    spawn_trim(mgr.clone(), cfg.stream.clone(), TrimFloor::Offset(key.clone()));
    let mut c = mgr.clone();
    let mut offset = stored_offset(&mut c, &key).await;
    tracing::info!(stream = %cfg.stream, offset = %offset, "batch consumer started");
    let mut conn = reader_conn(&client).await;
    let mut shutdown = runtime().shutdown_rx();
    let mut failures = 0u32;
    let retry = crate::resilience::RetryPolicy::from_env();
    let mut msgs: Vec<Message> = Vec::new();
    while !*shutdown.borrow() {
        if msgs.is_empty() {
            match read_after(&mut conn, &cfg, &offset).await {
                Ok(m) => msgs = m,
                Err(e) => {
                    tracing::warn!(error = %e, stream = %cfg.stream, "stream read failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    conn = reader_conn(&client).await;
                }
            }
            continue;
        }
        let to = msgs.last().map(|m| m.id.clone()).unwrap_or_default();
        let step = OffsetStep {
            key: key.clone(),
            from: offset.clone(),
            to: to.clone(),
        };
        let n = msgs.len() as u64;
        let (outcome, next) = tokio::join!(
            handler(std::mem::take(&mut msgs), step),
            read_after(&mut conn, &cfg, &to)
        );
        match outcome {
            Ok(BatchOutcome::Applied) => {
                failures = 0;
                runtime()
                    .metrics
                    .add("stream_messages_total", &[("stream", &cfg.stream)], n);
                offset = to;
                msgs = next.unwrap_or_default();
            }
            Ok(BatchOutcome::Moved) => {
                offset = stored_offset(&mut c, &key).await;
                tracing::debug!(stream = %cfg.stream, offset = %offset, "offset moved by another instance");
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, stream = %cfg.stream, "batch not applied; will retry");
                tokio::select! {
                    _ = tokio::time::sleep(retry.backoff(failures)) => {}
                    _ = shutdown.changed() => {}
                }
                offset = stored_offset(&mut c, &key).await;
            }
        }
    }
    tracing::info!(stream = %cfg.stream, "consumer stopped reading");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bs(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn finds_the_groups_last_delivered_entry() {
        let groups = Value::Array(vec![
            Value::Array(vec![bs("name"), bs("other"), bs("last-delivered-id"), bs("9-0")]),
            Value::Array(vec![
                bs("name"),
                bs("workflow"),
                bs("consumers"),
                Value::Int(1),
                bs("last-delivered-id"),
                bs("12-3"),
            ]),
        ]);
        assert_eq!(last_delivered(&groups, "workflow").as_deref(), Some("12-3"));
        assert_eq!(last_delivered(&groups, "missing"), None);
        assert!(stream_id("12-3") < stream_id("12-10"));
        assert!(stream_id("9-99") < stream_id("12-0"));
    }

    #[test]
    fn parses_xreadgroup_reply() {
        let v = Value::Array(vec![Value::Array(vec![
            bs("s"),
            Value::Array(vec![
                Value::Array(vec![bs("1-0"), Value::Array(vec![bs("a"), bs("1"), bs("b"), bs("2")])]),
                Value::Array(vec![bs("2-0"), Value::Nil]),
            ]),
        ])]);
        let m = parse_read(&v);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].id, "1-0");
        assert_eq!(m[0].get("b"), Some("2"));
        assert!(parse_read(&Value::Nil).is_empty());
    }
}
