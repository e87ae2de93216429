//! Taking replies: the FIFO head's next reply is stored or its redirect followed
//! (`-MOVED`, `-ASK`, with a host-less address resolved against the node that answered),
//! and finished entries are merged and written back to the pipe in request order.

use super::merge::{self, Part};
use super::redirect::{parse_redirect, redirect_loop};
use super::{Answer, Entry, Router, MAX_REDIRECTS};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, DuplexStream, WriteHalf};

impl Router {
    /// Takes the head's next reply: stores it, or follows its redirect.
    pub(super) async fn settle(&mut self, got: (usize, Answer)) {
        let (index, Answer { from, reply }) = got;
        let reply = match reply {
            Ok(bytes) => {
                // Taken from the node tasks' count (which added it before handing it over).
                let len = bytes.len();
                let _ = self
                    .buffered
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        Some(n.saturating_sub(len))
                    });
                bytes
            }
            Err(text) => {
                let mut out = BytesMut::new();
                crate::resp::write_error(&mut out, &text);
                out.freeze()
            }
        };
        let Some(entry) = self.queue.front_mut() else {
            return;
        };
        let follow = entry.follow;
        let Some(pending) = entry.parts.get_mut(index) else {
            return;
        };
        pending.rx = None;
        let tracked = pending.slot;
        let redirect = if follow {
            parse_redirect(&reply, &from)
        } else {
            None
        };
        let Some((ask, slot, address)) = redirect else {
            pending.reply = Some(reply);
            return self.answered(tracked).await;
        };
        if pending.redirects >= MAX_REDIRECTS {
            pending.reply = Some(redirect_loop(&self.endpoint.name, slot, &reply));
            return self.answered(tracked).await;
        }
        pending.redirects += 1;
        let request = pending.part.request.clone();
        if let Some(tracked) = tracked {
            self.redirected(tracked);
        }
        let rx = if ask {
            crate::upstream::health::record(
                &self.endpoint.name,
                crate::upstream::health::Event::Ask,
            );
            let mut both = BytesMut::from(crate::resp::command(&[b"ASKING"]).as_ref());
            both.extend_from_slice(&request);
            self.send_now(&address, both.freeze(), 1).await
        } else {
            self.cluster.moved(slot, &address);
            self.send_now(&address, request, 0).await
        };
        if let Some(pending) = self.queue.front_mut().and_then(|e| e.parts.get_mut(index)) {
            pending.rx = Some(rx);
        }
    }

    /// Waits for every pending entry and writes its reply.
    pub(super) async fn drain(
        &mut self,
        writer: &mut WriteHalf<DuplexStream>,
    ) -> std::io::Result<()> {
        while !self.queue.is_empty() {
            let got = head(&mut self.queue).await;
            self.settle(got).await;
            self.flush(writer).await?;
        }
        Ok(())
    }

    /// Writes every finished entry at the queue's front to the pipe.
    pub(super) async fn flush(
        &mut self,
        writer: &mut WriteHalf<DuplexStream>,
    ) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        while self.queue.front().is_some_and(Entry::done) {
            let Some(entry) = self.queue.pop_front() else {
                break;
            };
            let parts: Vec<Part> = entry.parts.iter().map(|p| p.part.clone()).collect();
            let replies: Vec<Bytes> = entry.parts.into_iter().filter_map(|p| p.reply).collect();
            let merged = merge::merge(entry.how, &parts, &replies, entry.keys);
            if crate::resp::is_error(&merged) {
                if let Some(undo) = entry.state_undo {
                    self.state = undo;
                }
            }
            out.extend_from_slice(&merged);
        }
        if !out.is_empty() {
            writer.write_all(&out).await?;
            writer.flush().await?;
        }
        Ok(())
    }
}

/// Waits for the next reply of the queue's head entry: `(part index, answer)`.
pub(super) async fn head(queue: &mut VecDeque<Entry>) -> (usize, Answer) {
    let Some(entry) = queue.front_mut() else {
        return std::future::pending().await;
    };
    let Some((index, pending)) = entry
        .parts
        .iter_mut()
        .enumerate()
        .find(|(_, p)| p.reply.is_none())
    else {
        return std::future::pending().await;
    };
    match pending.rx.as_mut() {
        Some(rx) => {
            let answer = rx.await.unwrap_or_else(|_| Answer {
                from: Arc::from(""),
                reply: Err(Arc::from(
                    "ERR turnout: cluster node connection ended without a reply",
                )),
            });
            (index, answer)
        }
        None => std::future::pending().await,
    }
}
