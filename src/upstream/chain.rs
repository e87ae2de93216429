//! Bytes waiting for a shared connection, kept as a chain of buffers and written with one
//! vectored write.
//!
//! A shared connection gathers the batches of many sessions and writes them together (see
//! [`super::mux`]). Copying every batch behind the one before is cheap for small requests and
//! keeps them in one buffer; for a large value it is not: ten sessions each sending a 64 KiB
//! SET had their requests copied (and the buffer regrown, copying again) on the way to one
//! write. So a batch of at least [`OWN_SEGMENT_AT`] bytes keeps its own buffer, the session's
//! request moved in whole, and the chain's buffers leave in one `writev`.

use bytes::{Buf, BytesMut};
use std::collections::VecDeque;
use std::io::IoSlice;

/// Batches this large (or larger) join the chain as buffers of their own, uncopied; smaller
/// ones are copied behind the last buffer.
pub const OWN_SEGMENT_AT: usize = 8 * 1024;

/// Most buffers handed to one vectored write (Linux takes up to 1,024).
pub const MAX_SLICES: usize = 64;

/// Largest emptied buffer kept for reuse.
const SPARE_MAX: usize = 64 * 1024;

/// Bytes in order, in one or more buffers.
#[derive(Debug, Default)]
pub struct Chain {
    segments: VecDeque<BytesMut>,
    /// Bytes over all segments.
    len: usize,
    /// A written-out buffer, handed back to the next session whose buffer the chain takes, so
    /// that small batches keep circulating the same few buffers instead of allocating.
    spare: BytesMut,
}

impl Chain {
    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `bytes`, leaving it empty (holding a spare buffer when the chain took its own).
    pub fn append(&mut self, bytes: &mut BytesMut) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if bytes.len() < OWN_SEGMENT_AT {
            if let Some(last) = self.segments.back_mut() {
                // Behind a small buffer, or into room a large one has left: no large copy.
                if last.len() < OWN_SEGMENT_AT || last.capacity() - last.len() >= bytes.len() {
                    last.extend_from_slice(bytes);
                    bytes.clear();
                    return;
                }
            }
        }
        let spare = std::mem::take(&mut self.spare);
        self.segments.push_back(std::mem::replace(bytes, spare));
    }

    /// Moves everything in `other` behind what this chain holds; `other` gets this chain's
    /// spare buffer if it has none (the writer's emptied buffers go back to the sessions).
    pub fn append_chain(&mut self, other: &mut Chain) {
        if other.spare.capacity() == 0 {
            std::mem::swap(&mut self.spare, &mut other.spare);
        }
        if self.is_empty() {
            std::mem::swap(&mut self.segments, &mut other.segments);
            self.len = std::mem::take(&mut other.len);
            return;
        }
        while let Some(mut segment) = other.segments.pop_front() {
            self.append(&mut segment);
            other.keep(segment);
        }
        other.len = 0;
    }

    /// Drops every byte waiting.
    pub fn clear(&mut self) {
        while let Some(segment) = self.segments.pop_front() {
            self.keep(segment);
        }
        self.len = 0;
    }

    /// Removes the first `n` bytes (all of them if fewer wait) and appends them to `to`, or
    /// drops them when `to` is `None`.
    pub fn move_front(&mut self, mut n: usize, mut to: Option<&mut Chain>) {
        while n > 0 {
            let Some(front) = self.segments.front_mut() else {
                return;
            };
            let mut piece = if front.len() <= n {
                let whole = std::mem::take(front);
                self.segments.pop_front();
                whole
            } else {
                front.split_to(n)
            };
            n -= piece.len();
            self.len -= piece.len();
            if let Some(to) = to.as_deref_mut() {
                to.append(&mut piece);
            }
            self.keep(piece);
        }
    }

    /// The waiting bytes as slices for a vectored write: at most [`MAX_SLICES`] of them.
    pub fn slices(&self) -> impl Iterator<Item = IoSlice<'_>> {
        self.segments
            .iter()
            .take(MAX_SLICES)
            .map(|segment| IoSlice::new(segment))
    }

    /// The first buffer's bytes (for a stream that writes one buffer at a time).
    pub fn first(&self) -> &[u8] {
        self.segments.front().map_or(&[], |segment| segment)
    }

    /// Drops the first `n` bytes, which have been written.
    pub fn advance(&mut self, mut n: usize) {
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.segments.front_mut() else {
                return;
            };
            if front.len() > n {
                front.advance(n);
                return;
            }
            n -= front.len();
            if let Some(done) = self.segments.pop_front() {
                self.keep(done);
            }
        }
    }

    /// Keeps an emptied buffer as the spare, if there is none and it has room, and not much.
    /// A buffer written to its end reports no room (a request moved out of a client's buffer
    /// is cut to its length) and may share a larger allocation: it goes.
    fn keep(&mut self, mut buffer: BytesMut) {
        buffer.clear();
        if self.spare.capacity() == 0 && (1..=SPARE_MAX).contains(&buffer.capacity()) {
            self.spare = buffer;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(chain: &Chain) -> Vec<u8> {
        chain
            .segments
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect()
    }

    fn buf(fill: u8, n: usize) -> BytesMut {
        BytesMut::from(&vec![fill; n][..])
    }

    #[test]
    fn small_batches_share_a_buffer_and_large_ones_keep_their_own() {
        let mut chain = Chain::default();
        chain.append(&mut buf(b'a', 10));
        chain.append(&mut buf(b'b', 20));
        let mut large = buf(b'c', OWN_SEGMENT_AT);
        let at = large.as_ptr();
        chain.append(&mut large);
        assert!(large.is_empty());
        chain.append(&mut buf(b'd', 5));
        assert_eq!(chain.len(), 35 + OWN_SEGMENT_AT);
        assert_eq!(chain.segments.len(), 3, "small, large (uncopied), small");
        assert_eq!(
            chain.segments[1].as_ptr(),
            at,
            "the large batch was not copied"
        );
        let mut expected = vec![b'a'; 10];
        expected.extend([b'b'; 20]);
        expected.extend(vec![b'c'; OWN_SEGMENT_AT]);
        expected.extend([b'd'; 5]);
        assert_eq!(bytes(&chain), expected);
    }

    #[test]
    fn a_small_batch_fills_the_room_a_large_buffer_has_left() {
        let mut large = BytesMut::with_capacity(OWN_SEGMENT_AT + 100);
        large.extend_from_slice(&[b'x'; OWN_SEGMENT_AT]);
        let mut chain = Chain::default();
        chain.append(&mut large);
        chain.append(&mut buf(b'y', 50));
        assert_eq!(chain.segments.len(), 1);
        chain.append(&mut buf(b'z', 60));
        assert_eq!(chain.segments.len(), 2, "no room left: a buffer of its own");
        assert_eq!(chain.len(), OWN_SEGMENT_AT + 110);
    }

    #[test]
    fn writing_advances_across_buffers_in_order() {
        let mut chain = Chain::default();
        chain.append(&mut buf(b'a', OWN_SEGMENT_AT));
        chain.append(&mut buf(b'b', OWN_SEGMENT_AT));
        chain.append(&mut buf(b'c', 3));
        let total: usize = chain.slices().map(|s| s.len()).sum();
        assert_eq!(total, chain.len());
        chain.advance(OWN_SEGMENT_AT + 1);
        assert_eq!(chain.len(), OWN_SEGMENT_AT + 2);
        assert_eq!(chain.first().len(), OWN_SEGMENT_AT - 1);
        assert_eq!(chain.first()[0], b'b');
        chain.advance(OWN_SEGMENT_AT - 1);
        assert_eq!(chain.first(), b"ccc");
        chain.advance(3);
        assert!(chain.is_empty());
        assert!(chain.first().is_empty());
        assert_eq!(chain.slices().count(), 0);
    }

    #[test]
    fn a_vectored_write_is_offered_at_most_the_slice_limit() {
        let mut chain = Chain::default();
        for _ in 0..MAX_SLICES + 5 {
            chain.append(&mut buf(b'q', OWN_SEGMENT_AT));
        }
        assert_eq!(chain.slices().count(), MAX_SLICES);
        assert_eq!(chain.len(), (MAX_SLICES + 5) * OWN_SEGMENT_AT);
    }

    #[test]
    fn chains_join_in_order_and_the_front_moves_or_drops_by_length() {
        let mut first = Chain::default();
        first.append(&mut buf(b'a', 4));
        let mut second = Chain::default();
        second.append(&mut buf(b'b', OWN_SEGMENT_AT));
        second.append(&mut buf(b'c', 6));
        first.append_chain(&mut second);
        assert!(second.is_empty());
        assert_eq!(first.len(), 10 + OWN_SEGMENT_AT);

        // Drop the a's, move the b's and the first c, keep the rest.
        first.move_front(4, None);
        let mut kept = Chain::default();
        first.move_front(OWN_SEGMENT_AT + 1, Some(&mut kept));
        assert_eq!(kept.len(), OWN_SEGMENT_AT + 1);
        assert_eq!(bytes(&kept).last(), Some(&b'c'));
        assert_eq!(bytes(&first), b"ccccc");
        first.move_front(100, None);
        assert!(first.is_empty());

        let mut empty = Chain::default();
        empty.append_chain(&mut kept);
        assert_eq!(empty.len(), OWN_SEGMENT_AT + 1);
        assert!(kept.is_empty());
    }

    #[test]
    fn the_writers_emptied_buffer_goes_back_to_the_queue_it_takes_from() {
        let mut queue = Chain::default();
        let mut writer = Chain::default();
        let mut request = BytesMut::with_capacity(2000);
        request.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        queue.append(&mut request);
        writer.append_chain(&mut queue);
        writer.advance(writer.len());
        // The next batch is taken; the writer's emptied buffer goes to the queue...
        queue.append(&mut buf(b'x', 14));
        writer.append_chain(&mut queue);
        // ...which hands it to the session whose buffer it takes next.
        let mut next = buf(b'y', 14);
        queue.append(&mut next);
        assert!(next.capacity() >= 1900, "got {}", next.capacity());
    }

    #[test]
    fn a_written_buffer_comes_back_for_the_next_session() {
        let mut chain = Chain::default();
        let mut first = BytesMut::with_capacity(1000);
        first.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        chain.append(&mut first);
        assert_eq!(first.capacity(), 0, "the chain took the buffer");
        chain.advance(chain.len());
        let mut next = buf(b'p', 14);
        chain.append(&mut next);
        assert!(next.is_empty());
        assert!(
            next.capacity() >= 900,
            "the written buffer came back: {}",
            next.capacity()
        );
    }
}
