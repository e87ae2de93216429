//! Hash slots and the slot map: which primary serves each of the 16384 slots.
//!
//! A key's slot is CRC16/XMODEM of the key (or of its `{hash tag}`: the bytes between the
//! first `{` and the next `}`, when not empty) modulo 16384, as Redis Cluster defines it. The
//! map is read from `CLUSTER SLOTS` and is immutable once built: a change makes a new map.

use crate::resp::reply;

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// Slot value of a slot that no known node serves.
pub const UNASSIGNED: u16 = u16::MAX;

/// Most nodes a map may name (a cluster of more primaries than this is not plausible).
pub const MAX_NODES: usize = 1024;

const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);

/// The hash slot of `key`.
pub fn slot(key: &[u8]) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    CRC16.checksum(hashed) & (SLOTS as u16 - 1)
}

/// The hash tag of `key`: the bytes between the first `{` and the first `}` after it, when
/// there are any.
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let rest = &key[open + 1..];
    let close = rest.iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &rest[..close])
}

/// Which node serves each slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// Index into `nodes` per slot, or [`UNASSIGNED`].
    slots: Vec<u16>,
    /// Primary addresses (`host:port`).
    nodes: Vec<String>,
}

impl Default for SlotMap {
    fn default() -> Self {
        SlotMap {
            slots: vec![UNASSIGNED; SLOTS],
            nodes: Vec::new(),
        }
    }
}

impl SlotMap {
    /// The address of the primary serving `slot`, if known.
    pub fn owner(&self, slot: u16) -> Option<&str> {
        let index = *self.slots.get(usize::from(slot))?;
        self.nodes.get(usize::from(index)).map(String::as_str)
    }

    /// Every primary address, in the order first seen.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Whether no slot is assigned.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|&s| s == UNASSIGNED)
    }

    /// The slots whose owner differs between `self` and `other`, as `(old, new)` owner pairs
    /// (deduplicated).
    pub fn changed_owners<'a>(&'a self, other: &'a SlotMap) -> Vec<(&'a str, &'a str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for slot in 0..SLOTS as u16 {
            if let (Some(old), Some(new)) = (self.owner(slot), other.owner(slot)) {
                if old != new && !out.contains(&(old, new)) {
                    out.push((old, new));
                }
            }
        }
        out
    }

    /// A copy where `slot` is served by `address` (after a `-MOVED`).
    pub fn with_owner(&self, slot: u16, address: &str) -> SlotMap {
        let mut map = self.clone();
        map.assign(slot, slot, address);
        map
    }

    fn assign(&mut self, first: u16, last: u16, address: &str) {
        let index = match self.nodes.iter().position(|n| n == address) {
            Some(i) => i,
            None if self.nodes.len() < MAX_NODES => {
                self.nodes.push(address.to_string());
                self.nodes.len() - 1
            }
            None => return,
        };
        for slot in first..=last.min(SLOTS as u16 - 1) {
            self.slots[usize::from(slot)] = index as u16;
        }
    }

    /// Builds a map from a `CLUSTER SLOTS` reply received from `from` (whose host stands in
    /// for an empty, `?` or null host in the reply: Redis 7 answers null with
    /// `cluster-preferred-endpoint-type unknown-endpoint`).
    ///
    /// Returns `None` when the reply is not a `CLUSTER SLOTS` reply.
    pub fn from_cluster_slots(reply: &[u8], from: &str) -> Option<SlotMap> {
        let from_host = from.rsplit_once(':').map_or(from, |(h, _)| h);
        let mut map = SlotMap::default();
        for range in reply::elements(reply)? {
            let fields = reply::elements(range)?;
            let first = u16::try_from(int(fields.first()?)?).ok()?;
            let last = u16::try_from(int(fields.get(1)?)?).ok()?;
            let primary = reply::elements(fields.get(2)?)?;
            let host = match *primary.first()? {
                b"$-1\r\n" | b"_\r\n" => from_host,
                field => match std::str::from_utf8(reply::bulk(field)?).ok()? {
                    "" | "?" => from_host,
                    h => h,
                },
            };
            let port = int(primary.get(1)?)?;
            if first > last || usize::from(last) >= SLOTS {
                return None;
            }
            map.assign(first, last, &format!("{host}:{port}"));
        }
        Some(map)
    }
}

/// The value of an integer reply (`:n\r\n`).
pub fn int(reply: &[u8]) -> Option<i64> {
    let digits = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_hash_to_redis_slots() {
        // Values from Redis's CLUSTER KEYSLOT.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b""), 0);
    }

    #[test]
    fn hash_tags_follow_the_cluster_rules() {
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"{user1000}.followers"), slot(b"{user1000}.following"));
        // The first `{` and the first `}` after it.
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        // Values from Redis 7.0's CLUSTER KEYSLOT.
        assert_eq!(slot(b"foo{bar}{zap}"), 5061);
        assert_eq!(slot(b"foo{{bar}}zap"), 4015);
        assert_eq!(slot(b"foo{}{bar}"), 8363);
        // An empty tag hashes the whole key.
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"{}"), 15257);
        // Unclosed braces hash the whole key.
        assert_eq!(slot(b"foo{bar"), slot(b"foo{bar"));
        assert_ne!(slot(b"foo{bar"), slot(b"bar"));
        assert_eq!(hash_tag(b"}{x}"), Some(&b"x"[..]));
    }

    #[test]
    fn a_cluster_slots_reply_becomes_a_map() {
        let reply = b"*2\r\n\
*3\r\n:0\r\n:8191\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n\
*4\r\n:8192\r\n:16383\r\n*3\r\n$0\r\n\r\n:7001\r\n$2\r\nid\r\n*3\r\n$9\r\n127.0.0.1\r\n:7002\r\n$2\r\nid\r\n";
        let map = SlotMap::from_cluster_slots(reply, "127.0.0.9:7001").expect("parsed");
        assert_eq!(map.owner(0), Some("127.0.0.1:7000"));
        assert_eq!(map.owner(8191), Some("127.0.0.1:7000"));
        assert_eq!(map.owner(8192), Some("127.0.0.9:7001"));
        assert_eq!(map.owner(16383), Some("127.0.0.9:7001"));
        assert_eq!(map.nodes().len(), 2);
        assert!(!map.is_empty());
        let moved = map.with_owner(5, "127.0.0.1:7003");
        assert_eq!(moved.owner(5), Some("127.0.0.1:7003"));
        assert_eq!(moved.owner(6), Some("127.0.0.1:7000"));
        assert_eq!(
            map.changed_owners(&moved),
            vec![("127.0.0.1:7000", "127.0.0.1:7003")]
        );
        assert!(SlotMap::from_cluster_slots(b"-ERR no\r\n", "x:1").is_none());
        // Redis 7 with cluster-preferred-endpoint-type unknown-endpoint: a null host, the
        // one the reply came from.
        let unknown = b"*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$-1\r\n:7001\r\n$2\r\nid\r\n*2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n";
        let map = SlotMap::from_cluster_slots(unknown, "127.0.0.2:7001").expect("parsed");
        assert_eq!(map.owner(9), Some("127.0.0.2:7001"));
        assert!(SlotMap::from_cluster_slots(b"*0\r\n", "x:1").is_some_and(|m| m.is_empty()));
    }
}
