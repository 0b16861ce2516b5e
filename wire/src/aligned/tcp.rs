//! [`SendQueue`] for tokio's TCP write half: non-blocking writes through tokio, the queue
//! state from the socket on Linux, none elsewhere (the writer then writes one packet per call).

use std::io;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

use super::{QueueState, SendQueue};

impl SendQueue for OwnedWriteHalf {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let stream: &tokio::net::TcpStream = self.as_ref();
            // Through tokio, so a WouldBlock clears the readiness `writable()` waits on.
            stream.try_io(tokio::io::Interest::WRITABLE, || {
                super::linux::send_eor(stream.as_raw_fd(), buf)
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            OwnedWriteHalf::try_write(self, buf)
        }
    }

    async fn writable(&self) -> io::Result<()> {
        OwnedWriteHalf::writable(self).await
    }

    fn state(&self) -> io::Result<Option<QueueState>> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let stream: &tokio::net::TcpStream = self.as_ref();
            super::linux::queue_state(stream.as_raw_fd()).map(Some)
        }
        #[cfg(not(target_os = "linux"))]
        {
            Ok(None)
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        AsyncWriteExt::shutdown(self).await
    }
}

/// Splits a legacy plain-TCP connection into its read half and an aligned packet writer.
/// Turns Nagle off (a batch must leave at once, not wait for an ACK) and warns when the
/// path's segment size is below the packet size, where no writer can keep packets whole.
pub fn aligned_split(
    stream: tokio::net::TcpStream,
    packet_size: usize,
) -> (
    tokio::net::tcp::OwnedReadHalf,
    super::AlignedWriter<OwnedWriteHalf>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        log::debug!("TCP_NODELAY not set: {e}");
    }
    // The kernel takes a write only when nothing is left unsent, and wakes the writer when
    // the queue drains (the module header says why).
    #[cfg(target_os = "linux")]
    if let Err(e) = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(1) {
        log::debug!("TCP_NOTSENT_LOWAT not set: {e}");
    }
    #[cfg(unix)]
    if let Ok(mss) = socket2::SockRef::from(&stream).tcp_mss() {
        if (mss as usize) < packet_size {
            log::warn!(
                "segment size {mss} is below the packet size {packet_size}: a recv({packet_size}) \
                 reader may see split packets on this path"
            );
        }
    }
    let (rd, wr) = stream.into_split();
    (rd, super::AlignedWriter::new(wr))
}
