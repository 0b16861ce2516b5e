//! The Linux side of the aligned writer: a `send` with `MSG_EOR` (the kernel then never
//! appends a later write to this packet's buffer, so each packet is its own segment), and the
//! send queue: unsent bytes (`SIOCOUTQNSD`), bytes not yet acknowledged (`SIOCOUTQ`) and the
//! peer's advertised window (`tcpi_snd_wnd` of `TCP_INFO`, Linux 5.4 and later; older kernels
//! report a shorter struct and the window is `None`).

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::RawFd;

use super::QueueState;

/// `SIOCOUTQNSD` (`include/uapi/linux/sockios.h`): bytes in the send queue not yet sent.
const SIOCOUTQNSD: libc::c_ulong = 0x894B;

fn ioctl_int(fd: RawFd, request: libc::c_ulong) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    // SAFETY: `fd` is an open socket owned by the caller for the duration of the call, and
    // both requests write exactly one `int` through the pointer, which points to a live local.
    let rc = unsafe { libc::ioctl(fd, request as _, &mut value as *mut libc::c_int) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(value).unwrap_or(0))
}

/// The peer's window from `TCP_INFO` (`None` when the kernel's struct stops before it) and
/// the segment size in use.
fn window_and_mss(fd: RawFd) -> io::Result<(Option<usize>, usize)> {
    // SAFETY: `tcp_info` is a plain C struct of integers, valid when zeroed.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a live, writable `tcp_info` of `len` bytes; the kernel writes at most
    // `len` bytes and stores the length it wrote in `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mss = info.tcpi_snd_mss as usize;
    let needed = offset_of!(libc::tcp_info, tcpi_snd_wnd) + size_of::<u32>();
    if (len as usize) < needed {
        return Ok((None, mss));
    }
    Ok((Some(info.tcpi_snd_wnd as usize), mss))
}

/// The send queue of the TCP socket `fd`.
pub(super) fn queue_state(fd: RawFd) -> io::Result<QueueState> {
    let unsent = ioctl_int(fd, SIOCOUTQNSD)?;
    let not_acked = ioctl_int(fd, libc::TIOCOUTQ)?;
    let (peer_window, mss) = window_and_mss(fd)?;
    Ok(QueueState {
        unsent,
        in_flight: not_acked.saturating_sub(unsent),
        peer_window,
        mss,
    })
}

/// One non-blocking `send` of `buf` marked end-of-record.
pub(super) fn send_eor(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    let flags = libc::MSG_EOR | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: `fd` is an open socket for the duration of the call, and the kernel reads at
    // most `buf.len()` bytes from `buf`, which is a live slice.
    let rc = unsafe { libc::send(fd, buf.as_ptr() as *const libc::c_void, buf.len(), flags) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}
