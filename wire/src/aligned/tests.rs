//! The writer against a simulated kernel: a send queue that refuses writes while anything is
//! unsent (`TCP_NOTSENT_LOWAT`), a peer window that a slow reader opens a little at a time.
//! Every write must be a whole number of packets, no larger than the MSS, and either fit the
//! window at once or be a single packet to a peer known to be wide.

use std::sync::{Arc, Mutex};

use super::*;

const MSS: usize = 16 * 1024;

#[derive(Default)]
struct Kernel {
    unsent: usize,
    in_flight: usize,
    window: usize,
    /// Bytes the reader has not consumed yet (they hold the window shut).
    unread: usize,
    /// Each accepted write: (length, whether it could only leave whole).
    writes: Vec<(usize, bool)>,
    /// Accept only this many bytes on the next write.
    short_next: Option<usize>,
    looks: u64,
    known_window: bool,
    buffer: usize,
    widest: usize,
}

impl Kernel {
    /// Time passes between two looks: unsent bytes go out when the window takes them, the
    /// peer acknowledges what arrived, and every third look the reader consumes 512 bytes.
    fn tick(&mut self) {
        self.looks += 1;
        let room = self.window.saturating_sub(self.in_flight);
        if self.unsent <= room {
            self.in_flight += self.unsent;
            self.unsent = 0;
        }
        self.unread += self.in_flight;
        self.in_flight = 0;
        if self.looks % 3 == 0 {
            self.unread = self.unread.saturating_sub(512);
        }
        self.window = self.buffer.saturating_sub(self.unread);
        self.widest = self.widest.max(self.window);
    }
}

#[derive(Clone)]
struct Sim(Arc<Mutex<Kernel>>);

impl SendQueue for Sim {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut k = self.0.lock().unwrap();
        if k.unsent > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let fits = k.window.saturating_sub(k.in_flight) >= buf.len();
        let single_to_wide = buf.len() == 1024 && k.widest >= WIDE_WINDOW_PACKETS * 1024;
        let whole = buf.len() % 1024 == 0 && buf.len() <= MSS && (fits || single_to_wide);
        k.writes.push((buf.len(), whole));
        let n = k.short_next.take().unwrap_or(buf.len()).min(buf.len());
        k.unsent += n;
        Ok(n)
    }

    async fn writable(&self) -> io::Result<()> {
        // The kernel wakes the writer once the queue has moved on.
        self.0.lock().unwrap().tick();
        Ok(())
    }

    fn state(&self) -> io::Result<Option<QueueState>> {
        let mut k = self.0.lock().unwrap();
        k.tick();
        Ok(Some(QueueState {
            unsent: k.unsent,
            in_flight: k.in_flight,
            peer_window: k.known_window.then_some(k.window),
            mss: MSS,
        }))
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn sim(buffer: usize, known_window: bool) -> Sim {
    // `known_window: false` is a kernel without `tcpi_snd_wnd`: only an idle queue is ready.
    Sim(Arc::new(Mutex::new(Kernel {
        window: buffer,
        buffer,
        known_window,
        ..Kernel::default()
    })))
}

fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn every_write_is_whole_packets_that_can_only_leave_whole() {
    for buffer in [2048, 3000, 6000, 64 * 1024] {
        let k = sim(buffer, true);
        let mut w = AlignedWriter::new(k.clone());
        let framed = crate::framing::frame_message(&vec![b'a'; 40_000], 1024);
        run(w.write_packets(&framed, 1024)).unwrap();
        let k = k.0.lock().unwrap();
        let total: usize = k.writes.iter().map(|w| w.0).sum();
        assert_eq!(total, framed.len(), "buffer {buffer}");
        for (i, (len, whole)) in k.writes.iter().enumerate() {
            assert!(whole, "write {i} of {len} bytes could be split ({buffer})");
        }
        if buffer < WIDE_WINDOW_PACKETS * 1024 {
            assert!(
                w.stats().waits > 0,
                "a {buffer}-byte window must make the writer wait"
            );
        }
        if buffer >= 6000 {
            assert!(
                k.writes.iter().any(|w| w.0 > 1024),
                "a wide window takes several packets per write ({buffer})"
            );
        }
        assert_eq!(w.stats().packets, framed.len() as u64 / 1024);
    }
}

#[test]
fn a_write_taken_in_part_is_completed_and_counted() {
    let k = sim(1 << 20, true);
    k.0.lock().unwrap().short_next = Some(300);
    let mut w = AlignedWriter::new(k.clone());
    run(w.write_packets(&[7u8; 1024], 1024)).unwrap();
    let writes = k.0.lock().unwrap().writes.clone();
    assert_eq!(
        writes.iter().map(|w| w.0).collect::<Vec<_>>(),
        vec![1024, 724]
    );
    assert_eq!(w.stats().partial_writes, 1);
}

#[test]
fn without_the_window_only_an_idle_queue_takes_one_packet() {
    let k = sim(1 << 20, false);
    let mut w = AlignedWriter::new(k.clone());
    let framed = crate::framing::frame_message(&vec![b'z'; 5000], 1024);
    run(w.write_packets(&framed, 1024)).unwrap();
    let k = k.0.lock().unwrap();
    assert!(k.writes.iter().all(|(len, _)| *len == 1024));
    assert_eq!(k.writes.len(), 6);
}

#[test]
fn plan_fits_the_window_or_sends_one_packet_to_a_wide_peer() {
    let s = |unsent, in_flight, peer_window| QueueState {
        unsent,
        in_flight,
        peer_window,
        mss: 65483,
    };
    // As many packets as the window takes at once, capped by the MSS and what is left.
    assert_eq!(s(0, 0, Some(5000)).plan(1024, 10, 5000), Plan::Send(4));
    assert_eq!(
        s(0, 0, Some(1 << 20)).plan(1024, 100, 1 << 20),
        Plan::Send(63)
    );
    assert_eq!(s(0, 0, Some(1 << 20)).plan(1024, 3, 1 << 20), Plan::Send(3));
    assert_eq!(s(1024, 1024, Some(4096)).plan(1024, 9, 4096), Plan::Send(2));
    // A path whose MSS is below the packet size still moves, one packet at a time.
    let small_mss = QueueState {
        mss: 536,
        ..s(0, 0, Some(1 << 20))
    };
    assert_eq!(small_mss.plan(1024, 5, 1 << 20), Plan::Send(1));
    // No room: a small peer waits, a wide one gets one packet to hold.
    assert_eq!(s(0, 2048, Some(2048)).plan(1024, 5, 2048), Plan::Wait);
    assert_eq!(s(0, 0, Some(0)).plan(1024, 5, 4096), Plan::Send(1));
    // No window known: one packet into an idle connection only.
    assert_eq!(s(0, 0, None).plan(1024, 5, 0), Plan::Send(1));
    assert_eq!(s(0, 10, None).plan(1024, 5, 0), Plan::Wait);
}

#[test]
fn plain_packets_write_everything() {
    let mut out = PlainPackets(Vec::new());
    let framed = crate::framing::frame_message(b"{\"a\": 1}", 16);
    run(out.write_packets(&framed, 16)).unwrap();
    assert_eq!(out.0, framed);
}
