//! Continuous batching end to end on the real generator and the tiny fixture model: four
//! clients send jobs of other schedulers (DDIM, Euler a, DPM++ 2M Karras, UniPC), step
//! counts, guidance scales and sample counts at once; each job's PNG bytes equal the bytes
//! the same request gets from a server running one job at a time (`--max-batch 1`).

mod e2e_common;
mod server_common;

use e2e_common::*;
use runai::config::Config;
use serde_json::{json, Value};
use server_common::{test_config, Client};

fn job(i: usize) -> Value {
    let (scheduler, steps, scale, samples) = [
        ("ddim", 6, "7.5", 1),
        ("euler_a", 4, "5", 2),
        ("dpm++_2m_karras", 5, "1", 1),
        ("unipc", 7, "3", 1),
    ][i];
    let mut req = txt2img(&format!("job{i}"), "tiny-sd1", steps, 40 + i as u64, 64, 64);
    let o = &mut req["options"];
    o["txt2img_scheduler"] = json!(scheduler);
    o["txt2img_scale"] = json!(scale);
    o["txt2img_n_samples"] = json!(samples.to_string());
    o["txt2img_prompt"] = json!(format!("a lighthouse, take {i}"));
    req
}

/// Every job's images (base64 PNGs), sent by four clients at once.
fn run_all(config: Config) -> Vec<Vec<String>> {
    let server = start_real_with(config, real_factory(), &[fixtures().join("models")]);
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(server.local_addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&job(i));
    }
    clients
        .iter_mut()
        .enumerate()
        .map(|(i, c)| {
            let r = c.collect_job(&format!("job{i}"));
            assert_eq!(r.end_event(), "done", "job {i}: {:?}", r.end);
            (0..r.images.len()).map(|k| image_b64(&r, k)).collect()
        })
        .collect()
}

#[test]
fn mixed_jobs_of_four_clients_are_byte_identical_to_one_job_at_a_time() {
    let alone = run_all(Config {
        max_batch: 1,
        ..test_config()
    });
    let mixed = run_all(test_config());
    assert_eq!(alone.len(), 4);
    for (i, (a, m)) in alone.iter().zip(&mixed).enumerate() {
        assert_eq!(a.len(), if i == 1 { 2 } else { 1 }, "job {i} image count");
        assert!(a == m, "job {i}: images differ between alone and mixed");
    }
}
