//! Aligned delivery (issue: the plugin's reader under load): a client that reads exactly like
//! the Krita plugin (`recv(1024)`, end of message only on one all-zero `recv`) receives 512x512
//! image replies (~1 MB each) whole with a small receive buffer, reading slowly, or while the
//! server's threads are starved on one busy core. Before the aligned writer, the 3000-byte
//! buffer case lost 9 of 10 such messages (`wire/examples/alignment.rs`). Loopback only.

mod plugin_reader;
mod server_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use plugin_reader::PluginReader;
use runai::app::{spawn_server, ServerThread};
use runai::registry::Registry;
use serde_json::json;

fn start() -> ServerThread {
    let config = server_common::test_config();
    let roots = config.model_roots();
    spawn_server(
        config,
        server_common::noise_factory(),
        Box::new(Registry::new(&roots)),
    )
    .expect("server starts")
}

/// Asks for `count` 512x512 images (batches of up to 8) and checks every message arrives
/// whole and decodable, every image at full size.
fn receive_images(reader: &mut PluginReader, count: usize, tag: &str) {
    let hello = reader.recv().expect("versions message");
    assert!(hello.get("versions").is_some(), "{hello}");
    let mut got = 0;
    let mut job = 0;
    while got < count {
        let n = (count - got).min(8);
        job += 1;
        let job_id = format!("{tag}-{job}");
        let mut req = server_common::txt2img(&job_id, "noise", 1, 1000 + got as u64, 512);
        req["options"]["txt2img_n_samples"] = json!(n.to_string());
        reader.send(&req);
        loop {
            let m = reader
                .recv()
                .unwrap_or_else(|e| panic!("{tag}: after {got} images: {e}"));
            if m.get("image").is_some() {
                let img = server_common::decode_png(&m);
                assert_eq!(img.dimensions(), (512, 512));
                got += 1;
            } else if m["event"] == json!("done") {
                break;
            } else {
                assert!(m["event"] != json!("error"), "{tag}: unexpected error {m}");
            }
        }
    }
    assert_eq!(
        reader.short_recvs, 0,
        "{tag}: a recv returned a partial packet"
    );
}

#[test]
fn small_receive_buffers_get_every_packet_whole() {
    let server = start();
    let mut r = PluginReader::connect(server.local_addr, Some(3000));
    receive_images(&mut r, 50, "rcvbuf3000");
    for buf in [2048, 4500, 6000] {
        let mut r = PluginReader::connect(server.local_addr, Some(buf));
        receive_images(&mut r, 5, &format!("rcvbuf{buf}"));
    }
    server.shutdown();
}

#[test]
fn a_slow_reader_gets_every_packet_whole() {
    let server = start();
    let mut r = PluginReader::connect(server.local_addr, Some(4096));
    r.delay = Duration::from_micros(300);
    receive_images(&mut r, 6, "slow");
    server.shutdown();
}

#[cfg(target_os = "linux")]
fn pin_current_thread(cpus: impl Iterator<Item = usize>) {
    // SAFETY: `set` is a zeroed cpu_set_t on the stack; CPU_SET writes inside it for indices
    // below CPU_SETSIZE (checked), and sched_setaffinity(0, ...) only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in cpus.filter(|c| *c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The reproduction: the server on one core beside two busy loops, the reader free.
#[cfg(target_os = "linux")]
#[test]
fn a_starved_writer_still_delivers_whole_packets() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Threads inherit the affinity of the thread that spawns them: the server's all land on 0.
    pin_current_thread(std::iter::once(0));
    let server = start();
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        })
        .collect();
    pin_current_thread(0..cpus.max(2));
    let mut r = PluginReader::connect(server.local_addr, None);
    receive_images(&mut r, 50, "starved");
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        b.join().unwrap();
    }
    server.shutdown();
}
