//! Rate limits that hold across sender instances (DESIGN §3.7): GCRA in one
//! atomic Redis script over every key a send needs (per campaign, per sender
//! number). When Redis cannot answer, nothing is granted.
//!
//! The local stack uses [`Limiter::Local`], the same algorithm in process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::ConnectionManager;

/// One limit a send must pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub key: String,
    pub per_second: f64,
    /// Sends allowed back to back before the rate applies.
    pub burst: u32,
}

impl Limit {
    fn interval_us(&self) -> i64 {
        (1_000_000.0 / self.per_second.max(1e-6)).round().max(1.0) as i64
    }

    fn tolerance_us(&self) -> i64 {
        self.interval_us() * i64::from(self.burst.max(1) - 1)
    }
}

/// Granted, or how long until the slowest limit would grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Granted,
    Wait(Duration),
}

#[derive(Debug, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct LimiterError(String);

/// GCRA for one key: the new theoretical arrival time when granted, else the
/// wait in microseconds. `tat` is the stored time (absent for a new key).
pub fn gcra(tat: Option<i64>, now: i64, interval: i64, tolerance: i64) -> Result<i64, i64> {
    let tat = tat.unwrap_or(now).max(now);
    let wait = tat - now - tolerance;
    if wait > 0 {
        Err(wait)
    } else {
        Ok(tat + interval)
    }
}

/// Checks every key and consumes from all of them only when all grant, so a
/// send refused by one limit does not spend the others.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local max_wait = 0
local new_tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local wait = tat - now - tolerance
  if wait > max_wait then max_wait = wait end
  new_tats[i] = tat + interval
end
if max_wait > 0 then return max_wait end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, new_tats[i], 'PX', math.ceil((new_tats[i] - now) / 1000) + 1000)
end
return 0
";

pub enum Limiter {
    Redis {
        conn: ConnectionManager,
        prefix: String,
        script: redis::Script,
    },
    Local(Mutex<HashMap<String, i64>>),
    /// No limits: benchmarks of the send path itself.
    Off,
}

impl Limiter {
    /// Connects to Redis; keys are written under `prefix:`.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, LimiterError> {
        let client = redis::Client::open(url).map_err(|e| LimiterError(e.to_string()))?;
        Self::connect(client, prefix).await
    }

    /// Connects as configured: over TLS (`rediss://`) trusting the configured
    /// CA when there is one (Memorystore's server CA), else plain.
    pub async fn from_config(config: &crate::config::RedisConfig) -> Result<Self, LimiterError> {
        let url = config.url.expose();
        let client = match &config.ca_cert {
            Some(pem) => {
                // Two crypto providers are in the build (the Google and the
                // HTTP crates each bring one): name the process's default.
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                redis::Client::build_with_tls(
                    url,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem.as_bytes().to_vec()),
                    },
                )
            }
            None => redis::Client::open(url),
        }
        .map_err(|e| LimiterError(e.to_string()))?;
        Self::connect(client, &config.key_prefix).await
    }

    async fn connect(client: redis::Client, prefix: &str) -> Result<Self, LimiterError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| LimiterError(e.to_string()))?;
        Ok(Self::Redis {
            conn,
            prefix: prefix.to_owned(),
            script: redis::Script::new(SCRIPT),
        })
    }

    pub fn local() -> Self {
        Self::Local(Mutex::new(HashMap::new()))
    }

    /// Asks every limit at once.
    pub async fn acquire(&self, limits: &[Limit]) -> Result<Decision, LimiterError> {
        match self {
            Limiter::Off => Ok(Decision::Granted),
            Limiter::Local(state) => {
                let now = chrono::Utc::now().timestamp_micros();
                let mut tats = state.lock().expect("limiter state");
                let mut results = vec![];
                for l in limits {
                    match gcra(
                        tats.get(&l.key).copied(),
                        now,
                        l.interval_us(),
                        l.tolerance_us(),
                    ) {
                        Ok(new_tat) => results.push((l.key.clone(), new_tat)),
                        Err(wait) => return Ok(Decision::Wait(wait_duration(wait))),
                    }
                }
                // Only when every limit granted is anything consumed, as in the script.
                tats.extend(results);
                Ok(Decision::Granted)
            }
            Limiter::Redis {
                conn,
                prefix,
                script,
            } => {
                let mut invocation = script.prepare_invoke();
                for l in limits {
                    invocation.key(format!("{prefix}:rl:{}", l.key));
                    invocation.arg(l.interval_us()).arg(l.tolerance_us());
                }
                let mut conn = conn.clone();
                let wait: i64 = invocation
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| LimiterError(e.to_string()))?;
                Ok(if wait > 0 {
                    Decision::Wait(wait_duration(wait))
                } else {
                    Decision::Granted
                })
            }
        }
    }
}

fn wait_duration(us: i64) -> Duration {
    Duration::from_micros(us.max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_spaces_sends_after_the_burst() {
        // 10/s with a burst of 3: three at once, then one per 100 ms.
        let (interval, tolerance) = (100_000, 200_000);
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(gcra(tat, 0, interval, tolerance).unwrap());
        }
        assert_eq!(gcra(tat, 0, interval, tolerance), Err(100_000));
        assert!(gcra(tat, 100_000, interval, tolerance).is_ok());
    }

    #[tokio::test]
    async fn local_limiter_consumes_only_when_all_limits_grant() {
        let l = Limiter::local();
        let slow = Limit {
            key: "slow".into(),
            per_second: 1.0,
            burst: 1,
        };
        let fast = Limit {
            key: "fast".into(),
            per_second: 1000.0,
            burst: 1,
        };
        assert_eq!(
            l.acquire(&[slow.clone(), fast.clone()]).await.unwrap(),
            Decision::Granted
        );
        assert!(matches!(
            l.acquire(&[slow.clone(), fast.clone()]).await.unwrap(),
            Decision::Wait(_)
        ));
        // The refused attempt did not spend the fast key: it grants alone right away.
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(l.acquire(&[fast]).await.unwrap(), Decision::Granted);
    }
}
