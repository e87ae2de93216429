//! The replication fence and promotion: turnout's own short commands to the two endpoints.

use crate::config::EndpointConfig;
use crate::stream::Stream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where a namespace's keys live on one endpoint: a database to SELECT, or a prefix on a
/// single-database endpoint.
#[derive(Debug, Clone, Default)]
pub(super) struct Side {
    /// The database to select first (`None` or 0: none).
    pub db: Option<u8>,
    /// The prefix the namespace's keys take there.
    pub prefix: String,
}

/// A fence key left behind by a crash expires by itself.
const FENCE_TTL_MS: &str = "600000";

/// Writes a unique key under `prefix` through `old`, waits until `new` has it (replication
/// caught up past every write acknowledged before it), then deletes it on both.
pub(super) async fn replicated(
    old: &EndpointConfig,
    new: &EndpointConfig,
    prefix: &str,
    (old_side, new_side): (&Side, &Side),
    connect_timeout: Duration,
    deadline: Instant,
) -> Result<(), String> {
    let within = tokio::time::Instant::from_std(deadline);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let key = format!("{prefix}turnout:fence:{}:{nanos}", std::process::id());
    let token = format!("{nanos}");
    let old_key = format!("{}{key}", old_side.prefix);
    let new_key = format!("{}{key}", new_side.prefix);
    let run = async {
        let mut old_conn = open_in(old, old_side, connect_timeout).await?;
        let reply = command(
            &mut old_conn,
            &["SET", &old_key, &token, "PX", FENCE_TTL_MS],
        )
        .await?;
        if reply != b"+OK\r\n" {
            return Err(format!(
                "the old endpoint refused the fence key: {}",
                String::from_utf8_lossy(&reply).trim_end()
            ));
        }
        let mut new_conn = open_in(new, new_side, connect_timeout).await?;
        let expected = format!("${}\r\n{token}\r\n", token.len());
        loop {
            let reply = command(&mut new_conn, &["GET", &new_key]).await?;
            if reply == expected.as_bytes() {
                break;
            }
            tokio::time::sleep(super::POLL).await;
        }
        // On the old endpoint (replicated to the new one); on the new one in case it is a
        // writable replica. A read-only replica refuses: that is fine.
        let _ = command(&mut old_conn, &["DEL", &old_key]).await?;
        let _ = command(&mut new_conn, &["DEL", &new_key]).await;
        Ok(())
    };
    let result = match tokio::time::timeout_at(within, run).await {
        Ok(result) => result,
        Err(_) => Err("the fence key did not reach the new endpoint before the deadline (is replication running and caught up?)".to_string()),
    };
    if result.is_err() {
        // Take the fence key out of the application's keyspace, off the cutover's path (the
        // hold is released at once); it expires by itself if this fails too.
        let (old, key, side) = (old.clone(), old_key.clone(), old_side.clone());
        tokio::spawn(async move {
            let cleanup = async {
                let mut conn = open_in(&old, &side, connect_timeout).await?;
                command(&mut conn, &["DEL", &key]).await
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), cleanup).await;
        });
    }
    result
}

/// `REPLICAOF NO ONE` on the new endpoint.
pub(super) async fn promote(
    new: &EndpointConfig,
    connect_timeout: Duration,
    deadline: Instant,
) -> Result<(), String> {
    let within = tokio::time::Instant::from_std(deadline);
    let run = async {
        let mut conn = open(new, connect_timeout).await?;
        let reply = command(&mut conn, &["REPLICAOF", "NO", "ONE"]).await?;
        if reply == b"+OK\r\n" {
            Ok(())
        } else {
            Err(format!(
                "REPLICAOF NO ONE refused: {}",
                String::from_utf8_lossy(&reply).trim_end()
            ))
        }
    };
    match tokio::time::timeout_at(within, run).await {
        Ok(result) => result,
        Err(_) => Err("REPLICAOF NO ONE did not answer before the deadline".to_string()),
    }
}

/// `CLIENT UNBLOCK id ERROR` on the old endpoint: the blocked command fails with
/// `-UNBLOCKED`, which its session takes as the signal to send it again after the flip.
pub(super) async fn unblock(
    old: &EndpointConfig,
    ids: &[u64],
    connect_timeout: Duration,
) -> Result<(), String> {
    let mut conn = open(old, connect_timeout).await?;
    for id in ids {
        let id = id.to_string();
        command(&mut conn, &["CLIENT", "UNBLOCK", &id, "ERROR"]).await?;
    }
    Ok(())
}

async fn open(endpoint: &EndpointConfig, timeout: Duration) -> Result<Stream, String> {
    crate::upstream::open(endpoint, timeout)
        .await
        .map_err(|e| format!("endpoint '{}': {e}", endpoint.name))
}

/// Opens a connection in the database of `side`.
async fn open_in(
    endpoint: &EndpointConfig,
    side: &Side,
    timeout: Duration,
) -> Result<Stream, String> {
    let mut conn = open(endpoint, timeout).await?;
    if let Some(db) = side.db.filter(|db| *db != 0) {
        let reply = command(&mut conn, &["SELECT", &db.to_string()]).await?;
        if reply != b"+OK\r\n" {
            return Err(format!(
                "endpoint '{}' refused SELECT {db}: {}",
                endpoint.name,
                String::from_utf8_lossy(&reply).trim_end()
            ));
        }
    }
    Ok(conn)
}

/// Sends one command and reads its whole reply.
async fn command(conn: &mut Stream, args: &[&str]) -> Result<Vec<u8>, String> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    crate::upstream::exchange(conn, &crate::resp::command(&args))
        .await
        .map_err(|e| e.to_string())
}
