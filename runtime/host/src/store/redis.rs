//! The store on a Redis server, shared by every replica pointed at it.
//!
//! Each operation is one Lua script (atomic on the server: read, change and expiry together),
//! sent over one multiplexed connection that reconnects by itself after a failure. The client
//! runs on a thread of its own with a small tokio runtime. The interceptor's call waits for the
//! answer, bounded by the store's timeout, off the proxy's I/O threads: on a multi-threaded
//! runtime the worker hands its other tasks to another thread first (`block_in_place`), so
//! sockets keep being served while a guest waits on Redis.

use super::{Backend, Entry, StoreError};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Keys on the server: `sluicegate:{scope}/{key}`.
const NAMESPACE: &str = "sluicegate:";

const GET: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('PTTL', KEYS[1])}
";

// Answers {1, new value}, or {0, 0} when the key holds something that is not an integer.
const INCREMENT: &str = r"
local current = redis.call('GET', KEYS[1])
if current and not string.match(current, '^-?%d+$') then return {0, 0} end
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if not current and tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return {1, v}
";

const COMPARE_AND_SET: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if tonumber(ARGV[4]) > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return 1
";

/// Where a call's answer goes.
type Reply<T> = std_mpsc::SyncSender<Result<T, StoreError>>;

/// Sends an answer; a caller that gave up waiting has dropped its receiver, and is not told.
fn answer<T>(reply: &Reply<T>, result: Result<T, StoreError>) {
    let _ = reply.try_send(result);
}

/// One call, with where its answer goes.
enum Request {
    Get(String, Reply<Option<Entry>>),
    Increment(String, i64, u32, Reply<i64>),
    CompareAndSet(String, Option<String>, String, u32, Reply<bool>),
}

impl Request {
    fn fail(self, e: StoreError) {
        match self {
            Request::Get(_, reply) => answer(&reply, Err(e)),
            Request::Increment(.., reply) => answer(&reply, Err(e)),
            Request::CompareAndSet(.., reply) => answer(&reply, Err(e)),
        }
    }

    async fn run(self, scripts: Scripts, mut connection: redis::aio::ConnectionManager, timeout: Duration) {
        let late = || StoreError::Unavailable(format!("redis did not answer within {timeout:?}"));
        let c = &mut connection;
        match self {
            Request::Get(key, reply) => {
                answer(&reply, tokio::time::timeout(timeout, scripts.get(c, key)).await.unwrap_or_else(|_| Err(late())))
            }
            Request::Increment(key, by, ttl, reply) => answer(
                &reply,
                tokio::time::timeout(timeout, scripts.increment(c, key, by, ttl)).await.unwrap_or_else(|_| Err(late())),
            ),
            Request::CompareAndSet(key, expected, value, ttl, reply) => answer(
                &reply,
                tokio::time::timeout(timeout, scripts.compare_and_set(c, key, expected, value, ttl))
                    .await
                    .unwrap_or_else(|_| Err(late())),
            ),
        }
    }
}

/// The store on one Redis server (or a proxy in front of one).
pub struct RedisStore {
    requests: mpsc::UnboundedSender<Request>,
    timeout: Duration,
}

impl RedisStore {
    /// A store on the server at `url` (`redis://[user:password@]host:port[/db]`, or `rediss://`
    /// for TLS). Nothing is connected yet: the first call connects, and a server that is down at
    /// start is reported by the calls that need it, not by the proxy's start.
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("store url: {e}"))?;
        let (requests, mut incoming) = mpsc::unbounded_channel::<Request>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name("sluicegate-store".into()).spawn(move || {
            runtime.block_on(async move {
                let scripts = Scripts::default();
                let mut connection: Option<redis::aio::ConnectionManager> = None;
                while let Some(request) = incoming.recv().await {
                    let manager = match &connection {
                        Some(manager) => manager.clone(),
                        None => match connect(&client, timeout).await {
                            Ok(manager) => connection.insert(manager).clone(),
                            Err(e) => {
                                request.fail(e);
                                continue;
                            }
                        },
                    };
                    tokio::spawn(request.run(scripts.clone(), manager, timeout));
                }
            });
        })?;
        Ok(RedisStore { requests, timeout })
    }

    fn call<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> Result<T, StoreError> {
        let (reply, answer) = std_mpsc::sync_channel(1);
        self.requests
            .send(request(reply))
            .map_err(|_| StoreError::Unavailable("the store's thread has stopped".into()))?;
        // The timeout on the store's thread answers first; this one only covers that thread
        // being stuck.
        let wait = || answer.recv_timeout(self.timeout + Duration::from_millis(100));
        let answer = match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        answer.unwrap_or_else(|_| Err(StoreError::Unavailable("redis did not answer in time".into())))
    }
}

async fn connect(client: &redis::Client, timeout: Duration) -> Result<redis::aio::ConnectionManager, StoreError> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1);
    match tokio::time::timeout(timeout, redis::aio::ConnectionManager::new_with_config(client.clone(), config)).await {
        Ok(Ok(manager)) => Ok(manager),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(StoreError::Unavailable(format!("connecting to redis took over {timeout:?}"))),
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

#[derive(Clone)]
struct Scripts {
    get: std::sync::Arc<redis::Script>,
    increment: std::sync::Arc<redis::Script>,
    compare_and_set: std::sync::Arc<redis::Script>,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            get: redis::Script::new(GET).into(),
            increment: redis::Script::new(INCREMENT).into(),
            compare_and_set: redis::Script::new(COMPARE_AND_SET).into(),
        }
    }
}

impl Scripts {
    async fn get(&self, c: &mut redis::aio::ConnectionManager, key: String) -> Result<Option<Entry>, StoreError> {
        let found: Option<(String, i64)> =
            self.get.key(format!("{NAMESPACE}{key}")).invoke_async(c).await.map_err(unavailable)?;
        Ok(found.map(|(value, pttl)| Entry {
            value,
            // PTTL: -1 for a key that never expires; seconds rounded up otherwise.
            expires_in: if pttl > 0 { (pttl as u64).div_ceil(1000).min(u32::MAX.into()) as u32 } else { 0 },
        }))
    }

    async fn increment(
        &self,
        c: &mut redis::aio::ConnectionManager,
        key: String,
        by: i64,
        ttl: u32,
    ) -> Result<i64, StoreError> {
        let (counter, value): (i64, i64) = self
            .increment
            .key(format!("{NAMESPACE}{key}"))
            .arg(by)
            .arg(ttl)
            .invoke_async(c)
            .await
            .map_err(unavailable)?;
        if counter == 1 { Ok(value) } else { Err(StoreError::NotACounter) }
    }

    async fn compare_and_set(
        &self,
        c: &mut redis::aio::ConnectionManager,
        key: String,
        expected: Option<String>,
        value: String,
        ttl: u32,
    ) -> Result<bool, StoreError> {
        let set: i64 = self
            .compare_and_set
            .key(format!("{NAMESPACE}{key}"))
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(value)
            .arg(ttl)
            .invoke_async(c)
            .await
            .map_err(unavailable)?;
        Ok(set == 1)
    }
}

impl Backend for RedisStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.call(|reply| Request::Get(key.to_string(), reply))
    }

    fn increment(&self, key: &str, by: i64, ttl_seconds: u32) -> Result<i64, StoreError> {
        self.call(|reply| Request::Increment(key.to_string(), by, ttl_seconds, reply))
    }

    fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
        ttl_seconds: u32,
    ) -> Result<bool, StoreError> {
        self.call(|reply| {
            Request::CompareAndSet(key.to_string(), expected.map(str::to_string), value.to_string(), ttl_seconds, reply)
        })
    }
}
