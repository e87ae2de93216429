//! One task per Sentinel endpoint that follows its primary: it subscribes to `+switch-master`
//! on one sentinel (the next one, after a back-off, when that fails) and asks the sentinels
//! again every `sentinel_recheck` interval, in case a message was missed. Changes go to the endpoint's
//! [`Watch`](super::Watch).

use super::{connect_sentinel, find_primary, watch, Watch};
use crate::config::{Config, EndpointConfig, EndpointKind};
use crate::resp::reply;
use crate::stream::Stream;
use crate::upstream::UpstreamError;
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// First wait before subscribing again after a sentinel failed; it doubles up to
/// [`SUBSCRIBE_BACKOFF_MAX`].
pub const SUBSCRIBE_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait before subscribing again.
pub const SUBSCRIBE_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Largest Pub/Sub frame a sentinel may send.
const MAX_FRAME: usize = 64 * 1024;

/// The monitor tasks; dropping this stops them.
#[derive(Debug, Default)]
pub struct Monitors(Vec<JoinHandle<()>>);

impl Monitors {
    /// Starts one monitor per Sentinel endpoint of `config`.
    pub fn start(config: &Config) -> Monitors {
        let timeout = config.proxy.connect_timeout;
        let tasks = config
            .endpoints
            .iter()
            .filter_map(|e| match e.kind {
                EndpointKind::Sentinel { recheck, .. } => Some((e, recheck)),
                _ => None,
            })
            .map(|(e, recheck)| tokio::spawn(monitor(e.clone(), timeout, recheck)))
            .collect();
        Monitors(tasks)
    }
}

impl Drop for Monitors {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Follows one endpoint's primary until aborted.
pub async fn monitor(endpoint: EndpointConfig, timeout: Duration, recheck: Duration) {
    let EndpointKind::Sentinel { sentinels, .. } = &endpoint.kind else {
        return;
    };
    if sentinels.is_empty() {
        return;
    }
    let watch = watch(&endpoint.name);
    let mut tick = tokio::time::interval(recheck);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut checker = Checker::default();
    let mut backoff = SUBSCRIBE_BACKOFF_MIN;
    // Runs until the task is aborted; each turn is paced by a subscription or a back-off.
    for sentinel in sentinels.iter().cycle() {
        match subscribe(&endpoint, sentinel, timeout).await {
            Ok(stream) => {
                tracing::debug!(endpoint = %endpoint.name, sentinel = %sentinel, "listening for +switch-master");
                let since = Instant::now();
                let cause =
                    listen(&endpoint, &watch, stream, &mut tick, &mut checker, timeout).await;
                // Only a subscription that lasted resets the back-off: one that a sentinel
                // ends right away must not be retried in a tight loop.
                if since.elapsed() > SUBSCRIBE_BACKOFF_MAX {
                    backoff = SUBSCRIBE_BACKOFF_MIN;
                }
                tracing::warn!(endpoint = %endpoint.name, sentinel = %sentinel, cause = %cause, "sentinel subscription lost; trying the next sentinel");
            }
            Err(cause) => {
                tracing::debug!(endpoint = %endpoint.name, sentinel = %sentinel, cause = %cause, "cannot subscribe to sentinel")
            }
        }
        let until = Instant::now()
            .checked_add(backoff)
            .unwrap_or_else(Instant::now);
        backoff = backoff.saturating_mul(2).min(SUBSCRIBE_BACKOFF_MAX);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => break,
                _ = tick.tick() => checker.check(&endpoint, &watch, timeout).await,
            }
        }
    }
}

/// Periodic rechecks, logging only when their outcome changes.
#[derive(Debug, Default)]
struct Checker {
    failing: bool,
}

impl Checker {
    async fn check(&mut self, endpoint: &EndpointConfig, watch: &Watch, timeout: Duration) {
        // A new primary is taken only once it answers ROLE as one: a sentinel that lags
        // behind a failover must not flip the endpoint back to the old primary.
        let known = watch.primary();
        match find_primary(endpoint, known.as_deref(), timeout).await {
            Ok((address, _)) => {
                watch.set(&endpoint.name, &address, "recheck");
                if std::mem::take(&mut self.failing) {
                    tracing::info!(endpoint = %endpoint.name, "sentinels answer again");
                }
            }
            Err(cause) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(endpoint = %endpoint.name, cause = %cause, "cannot ask the sentinels for the primary");
                }
            }
        }
    }
}

/// Connects to a sentinel and subscribes to `+switch-master`, confirmed.
async fn subscribe(
    endpoint: &EndpointConfig,
    sentinel: &str,
    timeout: Duration,
) -> Result<(Stream, BytesMut), UpstreamError> {
    let work = async {
        let mut stream = connect_sentinel(endpoint, sentinel, timeout).await?;
        let request = crate::resp::command(&[b"SUBSCRIBE", b"+switch-master"]);
        stream
            .write_all(&request)
            .await
            .map_err(UpstreamError::Io)?;
        stream.flush().await.map_err(UpstreamError::Io)?;
        let mut buf = BytesMut::with_capacity(512);
        let frame = read_frame(&mut stream, &mut buf).await?;
        let confirmed = reply::elements(&frame)
            .and_then(|items| {
                items
                    .first()
                    .and_then(|k| reply::bulk(k))
                    .map(|k| k == b"subscribe")
            })
            .unwrap_or(false);
        if !confirmed {
            return Err(UpstreamError::Sentinel(format!(
                "SUBSCRIBE answered {:?}",
                String::from_utf8_lossy(&frame).trim_end()
            )));
        }
        Ok((stream, buf))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| UpstreamError::ConnectTimeout(timeout))?
}

/// Handles switch messages and rechecks until the subscription fails; returns why.
async fn listen(
    endpoint: &EndpointConfig,
    watch: &Watch,
    (mut stream, mut buf): (Stream, BytesMut),
    tick: &mut Interval,
    checker: &mut Checker,
    timeout: Duration,
) -> UpstreamError {
    let EndpointKind::Sentinel { master_name, .. } = &endpoint.kind else {
        return UpstreamError::Unsupported("not a Sentinel endpoint".to_string());
    };
    loop {
        loop {
            let frame = match reply::complete_len(&buf) {
                Ok(Some(len)) => buf.split_to(len),
                Ok(None) => break,
                Err(e) => return UpstreamError::Protocol(e),
            };
            if let Some(address) = switched_to(&frame, master_name) {
                watch.set(&endpoint.name, &address, "+switch-master");
            }
        }
        if buf.len() > MAX_FRAME {
            return UpstreamError::Io(std::io::Error::other("oversized Pub/Sub frame"));
        }
        tokio::select! {
            read = stream.read_buf(&mut buf) => match read {
                Ok(0) => return UpstreamError::Closed,
                Ok(_) => {}
                Err(e) => return UpstreamError::Io(e),
            },
            _ = tick.tick() => checker.check(endpoint, watch, timeout).await,
        }
    }
}

/// Reads one complete frame, leaving whatever follows it in `buf`. Not
/// [`crate::upstream::exchange_limited`]: that drops the bytes after the reply, and on a
/// subscription a `+switch-master` message may arrive in the same read as the confirmation.
async fn read_frame(stream: &mut Stream, buf: &mut BytesMut) -> Result<BytesMut, UpstreamError> {
    loop {
        if let Some(len) = reply::complete_len(buf).map_err(UpstreamError::Protocol)? {
            return Ok(buf.split_to(len));
        }
        if buf.len() > MAX_FRAME {
            return Err(UpstreamError::Io(std::io::Error::other("oversized reply")));
        }
        if stream.read_buf(buf).await.map_err(UpstreamError::io)? == 0 {
            return Err(UpstreamError::Closed);
        }
    }
}

/// The new primary in a `+switch-master` message about `master_name`
/// (`<name> <old-ip> <old-port> <new-ip> <new-port>`).
fn switched_to(frame: &[u8], master_name: &str) -> Option<String> {
    let items = reply::elements(frame)?;
    let kind = reply::bulk(items.first()?)?;
    if kind != b"message" {
        return None;
    }
    let payload = std::str::from_utf8(reply::bulk(items.get(2)?)?).ok()?;
    let mut parts = payload.split(' ');
    if parts.next()? != master_name {
        return None;
    }
    let (host, port) = (parts.nth(2)?, parts.next()?.parse::<u16>().ok()?);
    Some(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_message_names_the_new_primary() {
        let frame = b"*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n$38\r\nmymaster 127.0.0.1 6379 127.0.0.1 6380\r\n";
        assert_eq!(
            switched_to(frame, "mymaster").as_deref(),
            Some("127.0.0.1:6380")
        );
        assert_eq!(switched_to(frame, "other"), None);
    }

    #[test]
    fn other_frames_are_not_switches() {
        let confirm = b"*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n";
        assert_eq!(switched_to(confirm, "mymaster"), None);
        let short = b"*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n$8\r\nmymaster\r\n";
        assert_eq!(switched_to(short, "mymaster"), None);
        let v6 =
            b"*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n$22\r\nm ::1 6379 ::1 6380 xx\r\n";
        assert_eq!(switched_to(v6, "m").as_deref(), Some("[::1]:6380"));
    }
}
