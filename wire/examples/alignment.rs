//! Measures what a plugin-style reader sees from two writers over loopback: `plain` (one
//! `write_all` per packet, what runai did before) and `aligned` (`runai_wire::aligned`).
//! The reader does what the Krita plugin's `connect.py` does: `recv(1024)`, append, a message
//! ends only when one `recv` returns exactly 1024 zero bytes, trailing NULs stripped, JSON
//! decoded. Prints one `RESULT {json}` line: short recvs, messages lost (glued or undecodable),
//! and throughput.
//!
//!   cargo run --release -p runai-wire --example alignment -- \
//!       --writer aligned --messages 20 --bytes 1000000 [--rcvbuf 3000] [--reader-delay-us 50]
//!       [--busy 2]   (2 spinning threads pinned to the writer's core, Linux)

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use runai_wire::aligned::{aligned_split, PacketWrite, PlainPackets};
use runai_wire::framing::frame_message;

const PACKET: usize = 1024;

struct Opts {
    writer: String,
    messages: usize,
    bytes: usize,
    rcvbuf: Option<usize>,
    reader_delay: Duration,
    busy: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        writer: "aligned".into(),
        messages: 10,
        bytes: 1_000_000,
        rcvbuf: None,
        reader_delay: Duration::ZERO,
        busy: 0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let v = pair.get(1).map(String::as_str).unwrap_or("");
        match pair[0].as_str() {
            "--writer" => o.writer = v.into(),
            "--messages" => o.messages = v.parse().expect("--messages N"),
            "--bytes" => o.bytes = v.parse().expect("--bytes N"),
            "--rcvbuf" => o.rcvbuf = Some(v.parse().expect("--rcvbuf N")),
            "--reader-delay-us" => {
                o.reader_delay = Duration::from_micros(v.parse().expect("--reader-delay-us N"))
            }
            "--busy" => o.busy = v.parse().expect("--busy N"),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// A JSON message of about `bytes` bytes, like an image reply.
fn message(i: usize, bytes: usize) -> Vec<u8> {
    let mut body = String::with_capacity(bytes + 64);
    body.push_str(&format!("{{\"image\": \"{i}:"));
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ i as u64;
    while body.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.push((b'A' + (x % 26) as u8) as char);
    }
    body.push_str("\", \"action\": 0}");
    frame_message(body.as_bytes(), PACKET)
}

#[cfg(target_os = "linux")]
fn pin_to_cpu0() {
    // SAFETY: `set` is a zeroed cpu_set_t on the stack; CPU_SET writes inside it, and
    // sched_setaffinity(0, ...) only reads it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_to_cpu0() {}

fn serve(listener: std::net::TcpListener, o: &Opts) {
    let frames: Vec<Vec<u8>> = (0..o.messages).map(|i| message(i, o.bytes)).collect();
    let writer = o.writer.clone();
    std::thread::spawn(move || {
        pin_to_cpu0();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            if writer == "aligned" {
                let (_rd, mut w) = aligned_split(stream, PACKET);
                for f in &frames {
                    w.write_packets(f, PACKET).await.unwrap();
                }
                eprintln!("writer: {:?}", w.stats());
                w.finish().await.unwrap();
            } else {
                stream.set_nodelay(true).unwrap();
                let mut w = PlainPackets(stream);
                for f in &frames {
                    w.write_packets(f, PACKET).await.unwrap();
                }
                w.finish().await.unwrap();
            }
        });
    });
}

fn connect(addr: SocketAddr, rcvbuf: Option<usize>) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if let Some(n) = rcvbuf {
        s.set_recv_buffer_size(n).unwrap();
    }
    s.connect(&addr.into()).unwrap();
    s.into()
}

fn main() {
    let o = opts();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    for _ in 0..o.busy {
        std::thread::spawn(|| {
            pin_to_cpu0();
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        });
    }
    serve(listener, &o);
    let mut sock = connect(addr, o.rcvbuf);
    let t0 = Instant::now();
    let (mut short, mut ok, mut bad, mut total) = (0usize, 0usize, 0usize, 0usize);
    let mut msg = Vec::new();
    let mut chunk = [0u8; PACKET];
    loop {
        let n = sock.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        total += n;
        if n != PACKET {
            short += 1;
        }
        if n == PACKET && chunk.iter().all(|b| *b == 0) {
            while msg.last() == Some(&0) {
                msg.pop();
            }
            match serde_json::from_slice::<serde_json::Value>(&msg) {
                Ok(_) => ok += 1,
                Err(_) => bad += 1,
            }
            msg.clear();
        } else {
            msg.extend_from_slice(&chunk[..n]);
        }
        if !o.reader_delay.is_zero() {
            std::thread::sleep(o.reader_delay);
        }
    }
    if !msg.is_empty() {
        bad += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "RESULT {}",
        serde_json::json!({
            "writer": o.writer, "rcvbuf": o.rcvbuf, "reader_delay_us": o.reader_delay.as_micros() as u64,
            "busy": o.busy, "messages": o.messages, "decoded": ok, "lost": o.messages - ok.min(o.messages),
            "undecodable": bad, "short_recvs": short, "bytes": total, "seconds": secs,
            "mb_per_s": total as f64 / secs / 1e6,
        })
    );
}
