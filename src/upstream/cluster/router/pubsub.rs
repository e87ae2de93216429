//! Pub/Sub on a cluster: the connection becomes a plain pipe to one node.
//!
//! Once a subscribe command arrives, every earlier reply is delivered, a connection to one
//! node is opened (the keyless node; for SSUBSCRIBE, the node serving the shard channel's
//! slot) with the session's connection state replayed, and bytes are copied both ways until
//! either side closes. Redis Cluster forwards PUBLISH to every node, so any node hears every
//! channel; shard channels live on their slot's node, so later SSUBSCRIBEs must name channels
//! of the same slot (else the node answers `-MOVED`, passed to the client).

use super::Router;
use crate::command::policy::Policy;
use crate::upstream::cluster::{node, slots};
use bytes::BytesMut;
use std::ops::Range;
use tokio::io::{AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

impl Router {
    /// The node a subscribe command at the start of `inbuf` hands the connection to, if the
    /// request is one.
    pub(super) fn subscribe_node(&mut self, inbuf: &[u8], args: &[Range<usize>]) -> Option<String> {
        let name = inbuf.get(args.first()?.clone())?;
        let second = args.get(1).and_then(|r| inbuf.get(r.clone()));
        if crate::command::resolve(name, second).policy != Policy::Subscribe {
            return None;
        }
        let shard = name.eq_ignore_ascii_case(b"ssubscribe");
        Some(match second {
            Some(channel) if shard => self.owner(slots::slot(channel)),
            _ => self.keyless_node(),
        })
    }

    /// Delivers every pending reply, then copies bytes between the pipe and `address`
    /// (starting with what is left in `inbuf`) until either side closes.
    pub(super) async fn pass_through(
        &mut self,
        address: String,
        inbuf: BytesMut,
        reader: &mut ReadHalf<DuplexStream>,
        writer: &mut WriteHalf<DuplexStream>,
    ) -> std::io::Result<()> {
        self.drain(writer).await?;
        // The node tasks are not needed any more: close their connections.
        self.nodes.clear();
        let mut node = match self.open_subscriber(&address).await {
            Ok(node) => node,
            Err(cause) => {
                let mut out = BytesMut::new();
                let text = node::failure_text(&self.endpoint.name, &cause, &address);
                crate::resp::write_error(&mut out, &text);
                writer.write_all(&out).await?;
                writer.flush().await?;
                return Ok(());
            }
        };
        node.write_all(&inbuf).await?;
        // TLS holds back what it encrypted until flushed; the copy below only flushes what
        // it wrote itself.
        node.flush().await?;
        let mut pipe = tokio::io::join(reader, writer);
        tokio::io::copy_bidirectional(&mut pipe, &mut node).await?;
        Ok(())
    }

    async fn open_subscriber(
        &self,
        address: &str,
    ) -> Result<crate::stream::Stream, crate::upstream::UpstreamError> {
        use crate::upstream::UpstreamError;
        let mut stream = crate::upstream::open_node(&self.endpoint, address, self.timeout).await?;
        for (_, _, command) in &self.state {
            let reply = tokio::time::timeout(
                self.timeout,
                crate::upstream::exchange(&mut stream, command),
            )
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(self.timeout))??;
            if crate::resp::is_error(&reply) {
                let text = String::from_utf8_lossy(&reply[1..]).trim_end().to_string();
                return Err(UpstreamError::StateReplay(text));
            }
        }
        Ok(stream)
    }
}
