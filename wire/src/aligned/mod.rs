//! Aligned delivery to legacy readers. The Krita plugin reads with `recv(1024)` and recognises
//! the end of a message only when one `recv` returns exactly 1024 zero bytes; a single short
//! `recv` shifts every later chunk and its receive thread dies. A `recv` returns less than a
//! packet only when fewer bytes than that are queued at the reader, so the bytes must arrive
//! in segments that are whole packets. One `write` per packet is not enough (measured in
//! `docs/protocol.md`, "Writing"): Linux appends a write to the previous one while that is
//! still unsent, then cuts the merged buffer where the peer's window ends or at the MSS, and
//! a window probe sends whatever part of a packet fits a small window.
//!
//! [`AlignedWriter`] closes each path. Every `send` is a whole number of packets, marked
//! `MSG_EOR` (the kernel never appends a later write to it) and no larger than the MSS (so it
//! leaves as one segment, and a window-limited send waits until all of it fits rather than
//! cutting it). `TCP_NOTSENT_LOWAT` of one byte makes the kernel refuse a write while
//! anything is still unsent and wake the writer when the queue has drained, so batches never
//! queue behind each other. Each batch is as many packets as the peer's window takes at once
//! (the window's right edge never moves back, so a batch that fits when written leaves whole,
//! whatever the congestion window), up to the MSS: a fast reader gets 63-packet segments on
//! loopback, a slow one single packets.
//!
//! When the window has no room for one packet, a single packet may wait in the kernel: the
//! only split left is a window probe into a window smaller than a packet. Linux receivers
//! advertise either zero or at least one received segment unless their whole buffer is under
//! two packets, so once the peer's window has been [`WIDE_WINDOW_PACKETS`] packets wide the
//! writer queues the packet and sleeps until the kernel sends it; for a smaller peer it waits
//! for the window itself (yields, then 1-8 ms sleeps).
//!
//! The queue, window and MSS come from the socket (`TCP_INFO`, `SIOCOUTQ`, `SIOCOUTQNSD`; see
//! `linux.rs`). A path whose MSS is below the packet size cannot be kept aligned by any
//! writer: `aligned_split` warns. Elsewhere than Linux the writer writes one packet per call.
//!
//! TLS connections are read by a TLS client, not by `recv(1024)`: [`PlainPackets`] writes them
//! packet by packet with `write_all`.

#[cfg(target_os = "linux")]
mod linux;
mod tcp;

pub use tcp::aligned_split;

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Something legacy packets are written to.
pub trait PacketWrite: Send {
    /// Writes `framed`, a whole number of packets of `packet_size` bytes.
    fn write_packets(
        &mut self,
        framed: &[u8],
        packet_size: usize,
    ) -> impl Future<Output = io::Result<()>> + Send;
    /// Flushes and closes the write side.
    fn finish(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

/// The send side of a connection as the aligned writer sees it. Implemented for tokio's TCP
/// write half (`tcp.rs`) and, in the tests, for a simulated kernel.
pub trait SendQueue: Send {
    /// One non-blocking `send` of `buf` marked end-of-record.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Resolves when the socket may accept bytes again.
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// What the kernel still holds, or `None` where the platform cannot tell.
    fn state(&self) -> io::Result<Option<QueueState>>;
    /// Closes the write direction.
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

/// The kernel's view of a connection's send side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueState {
    /// Bytes written by us and not yet sent.
    pub unsent: usize,
    /// Bytes sent and not yet acknowledged.
    pub in_flight: usize,
    /// The peer's advertised receive window, where the kernel reports it.
    pub peer_window: Option<usize>,
    /// The segment size in use.
    pub mss: usize,
}

/// A peer whose window has once been this many packets wide never advertises a window smaller
/// than a packet again (see the module header), so a packet may wait behind a closed window.
pub const WIDE_WINDOW_PACKETS: usize = 4;

/// What to do with the next packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Send this many packets in one write now.
    Send(usize),
    /// Look again later.
    Wait,
}

impl QueueState {
    /// How many of `left` packets of `packet` bytes to send in one write, given the widest
    /// window this peer has advertised so far.
    pub fn plan(&self, packet: usize, left: usize, widest_window: usize) -> Plan {
        let Some(window) = self.peer_window else {
            // Without the window, one packet at a time into an idle connection.
            return if self.unsent == 0 && self.in_flight == 0 {
                Plan::Send(1.min(left))
            } else {
                Plan::Wait
            };
        };
        let room = window.saturating_sub(self.in_flight + self.unsent);
        // An MSS below the packet size cannot keep packets whole (warned at set-up); still
        // one packet at a time rather than none.
        let fits = (room / packet).min((self.mss / packet).max(1)).min(left);
        if fits > 0 {
            Plan::Send(fits)
        } else if widest_window.max(window) >= WIDE_WINDOW_PACKETS * packet && left > 0 {
            Plan::Send(1)
        } else {
            Plan::Wait
        }
    }
}

/// Counters a test or a log line can read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    pub packets: u64,
    /// Writes issued (each a whole number of packets).
    pub writes: u64,
    /// Times the writer waited for a small peer's window.
    pub waits: u64,
    /// Writes the kernel took only in part (completed at once after; should stay 0).
    pub partial_writes: u64,
}

/// Writes whole packets so that a `recv(packet_size)` reader sees each one whole.
pub struct AlignedWriter<Q> {
    queue: Q,
    stats: WriterStats,
    /// The widest window the peer has advertised.
    widest_window: usize,
}

impl<Q: SendQueue> AlignedWriter<Q> {
    pub fn new(queue: Q) -> Self {
        AlignedWriter {
            queue,
            stats: WriterStats::default(),
            widest_window: 0,
        }
    }

    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    /// How many of `left` packets to write next; waits while a small peer has no room.
    async fn next_batch(&mut self, packet: usize, left: usize) -> io::Result<usize> {
        let mut tries = 0u32;
        loop {
            let Some(state) = self.queue.state()? else {
                return Ok(1);
            };
            self.widest_window = self.widest_window.max(state.peer_window.unwrap_or(0));
            if let Plan::Send(n) = state.plan(packet, left, self.widest_window) {
                return Ok(n);
            }
            if tries == 0 {
                self.stats.waits += 1;
            }
            pause(tries).await;
            tries = tries.saturating_add(1);
        }
    }

    /// Writes `batch` with one `send`, waiting while the kernel still holds unsent bytes.
    async fn send_batch(&mut self, batch: &[u8]) -> io::Result<bool> {
        let mut written = 0;
        while let Some(rest) = batch.get(written..).filter(|r| !r.is_empty()) {
            match self.queue.try_write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    if n < rest.len() {
                        self.stats.partial_writes += 1;
                    }
                    written += n;
                }
                // Unsent bytes remain: before anything was written, look at the window again
                // once the kernel wakes us; mid-batch, finish the batch.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.queue.writable().await?;
                    if written == 0 {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Between two looks at a small peer's window: an ACK on loopback comes within microseconds,
/// a slow reader's window update may take seconds. Yield a few times, then sleep 1-8 ms.
async fn pause(tries: u32) {
    const YIELDS: u32 = 16;
    if tries < YIELDS {
        tokio::task::yield_now().await;
    } else {
        let exp = ((tries - YIELDS) / 4).min(3);
        tokio::time::sleep(Duration::from_millis(1 << exp)).await;
    }
}

impl<Q: SendQueue> PacketWrite for AlignedWriter<Q> {
    async fn write_packets(&mut self, framed: &[u8], packet_size: usize) -> io::Result<()> {
        let packet = packet_size.max(1);
        let mut sent = 0;
        while sent < framed.len() {
            let left = (framed.len() - sent).div_ceil(packet);
            let n = self.next_batch(packet, left).await?;
            let end = (sent + n * packet).min(framed.len());
            let batch = framed.get(sent..end).unwrap_or(&[]);
            if self.send_batch(batch).await? {
                self.stats.writes += 1;
                self.stats.packets += n as u64;
                sent = end;
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> io::Result<()> {
        if self.stats.partial_writes > 0 {
            log::warn!(
                "{} of {} writes were taken in part by the kernel",
                self.stats.partial_writes,
                self.stats.writes
            );
        }
        self.queue.shutdown().await
    }
}

/// One `write_all` per packet, for transports whose reader is not `recv(packet_size)` (TLS).
pub struct PlainPackets<W>(pub W);

impl<W: AsyncWrite + Unpin + Send> PacketWrite for PlainPackets<W> {
    async fn write_packets(&mut self, framed: &[u8], packet_size: usize) -> io::Result<()> {
        for packet in framed.chunks(packet_size.max(1)) {
            self.0.write_all(packet).await?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> io::Result<()> {
        self.0.shutdown().await
    }
}

#[cfg(test)]
mod tests;
