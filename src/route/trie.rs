//! Longest-prefix matching of keys to namespaces.
//!
//! A byte trie built once from the config. A lookup walks at most as many nodes as the
//! longest matching prefix has bytes, whatever the number of namespaces, and allocates nothing.

/// A namespace index; see [`super::Namespaces`].
pub type NsId = u16;

#[derive(Debug, Default)]
struct Node {
    /// Child edges sorted by byte.
    edges: Vec<(u8, u32)>,
    /// The namespace whose prefix ends here.
    terminal: Option<NsId>,
}

/// Maps keys to the namespace with the longest matching prefix.
#[derive(Debug)]
pub struct PrefixTrie {
    nodes: Vec<Node>,
}

impl PrefixTrie {
    /// Builds the trie; `prefixes` pairs each prefix with its namespace. Later duplicates are
    /// ignored (config validation rejects them).
    pub fn new<'a>(prefixes: impl IntoIterator<Item = (&'a [u8], NsId)>) -> Self {
        let mut trie = PrefixTrie {
            nodes: vec![Node::default()],
        };
        for (prefix, ns) in prefixes {
            let mut at = 0usize;
            for &byte in prefix {
                at = match trie.child(at, byte) {
                    Some(next) => next,
                    None => {
                        let next = trie.nodes.len();
                        trie.nodes.push(Node::default());
                        let edges = &mut trie.nodes[at].edges;
                        let pos = edges.partition_point(|(b, _)| *b < byte);
                        edges.insert(pos, (byte, next as u32));
                        next
                    }
                };
            }
            trie.nodes[at].terminal.get_or_insert(ns);
        }
        trie
    }

    fn child(&self, node: usize, byte: u8) -> Option<usize> {
        let edges = &self.nodes[node].edges;
        if edges.len() <= 8 {
            edges
                .iter()
                .find(|(b, _)| *b == byte)
                .map(|(_, n)| *n as usize)
        } else {
            edges
                .binary_search_by_key(&byte, |(b, _)| *b)
                .ok()
                .map(|i| edges[i].1 as usize)
        }
    }

    /// The namespace of the longest prefix of `key`, if any.
    #[inline]
    pub fn lookup(&self, key: &[u8]) -> Option<NsId> {
        let mut best = None;
        let mut at = 0usize;
        for &byte in key {
            match self.child(at, byte) {
                Some(next) => at = next,
                None => return best,
            }
            if let Some(ns) = self.nodes[at].terminal {
                best = Some(ns);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trie(prefixes: &[(&str, NsId)]) -> PrefixTrie {
        PrefixTrie::new(prefixes.iter().map(|(p, n)| (p.as_bytes(), *n)))
    }

    #[test]
    fn the_longest_prefix_wins() {
        let t = trie(&[("a:", 0), ("a:b:", 1), ("tok:", 2), ("session:", 2)]);
        assert_eq!(t.lookup(b"a:x"), Some(0));
        assert_eq!(t.lookup(b"a:b:x"), Some(1));
        assert_eq!(t.lookup(b"a:b"), Some(0));
        assert_eq!(t.lookup(b"a:b:"), Some(1));
        assert_eq!(t.lookup(b"session:42"), Some(2));
        assert_eq!(t.lookup(b"tok"), None);
        assert_eq!(t.lookup(b""), None);
        assert_eq!(t.lookup(b"other"), None);
    }

    #[test]
    fn prefixes_are_bytes_not_text() {
        let t = trie(&[("\u{e9}t\u{e9}:", 0), ("\u{e9}", 1)]);
        assert_eq!(t.lookup("\u{e9}t\u{e9}:1".as_bytes()), Some(0));
        assert_eq!(t.lookup("\u{e9}x".as_bytes()), Some(1));
        assert_eq!(t.lookup(&[0xc3]), None);
    }

    #[test]
    fn many_namespaces_with_wide_fanout() {
        let names: Vec<String> = (0..1000).map(|i| format!("ns{i}:")).collect();
        let t = PrefixTrie::new(
            names
                .iter()
                .enumerate()
                .map(|(i, p)| (p.as_bytes(), i as NsId)),
        );
        for (i, p) in names.iter().enumerate() {
            assert_eq!(t.lookup(format!("{p}key").as_bytes()), Some(i as NsId));
        }
        assert_eq!(t.lookup(b"ns1000:key"), None);
        assert_eq!(t.lookup(b"ns10:"), Some(10));
    }
}
