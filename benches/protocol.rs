//! Criterion benches of the protocol's pure code on the paths every request takes: message
//! assembly of a large (16 MB) request, request parse + validation of a plugin txt2img, PNG +
//! base64 of a generated 512x512 image, and framing of the image reply. Issue #6 targets:
//! assembly >= 500 MB/s, PNG + base64 of 512x512 <= 20 ms. Never touches the network or disk.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use image::{Rgb, RgbImage};
use runai::protocol::assembler::{Assembler, Frame};
use runai::protocol::codec::frame_message;
use runai::protocol::request::{parse_request, Request};
use runai::protocol::responses;
use runai::protocol::responses::encode_png_base64;
use runai::protocol::validate::{validate_generate, Limits};
use runai::protocol::{frame_json, DEFAULT_PACKET_SIZE};
use serde_json::{json, Value};

/// Size of one socket read the session hands to the assembler (tokio's default buffer is
/// 8 KiB; larger reads only make assembly cheaper).
const READ_CHUNK: usize = 8 * 1024;

/// A plugin-style txt2img request (all four tabs' keys, numbers as strings), 64x64.
fn plugin_txt2img(size: u32) -> Value {
    let mut options = serde_json::Map::new();
    for tab in ["txt2img", "img2img", "inpaint", "outpaint"] {
        options.insert(
            format!("{tab}_prompt"),
            json!("a red fox in the snow, highly detailed"),
        );
        options.insert(format!("{tab}_negative_prompt"), json!("blurry"));
        options.insert(format!("{tab}_steps"), json!("20"));
        options.insert(format!("{tab}_scale"), json!("7.5"));
        options.insert(format!("{tab}_seed"), json!("1234"));
        options.insert(format!("{tab}_width"), json!(size));
        options.insert(format!("{tab}_height"), json!(size));
        options.insert(format!("{tab}_n_samples"), json!("1"));
        options.insert(format!("{tab}_scheduler"), json!("euler_a"));
        options.insert(format!("{tab}_ddim_eta"), json!(0.0));
    }
    options.insert("do_nsfw_filter".into(), json!("false"));
    options.insert("pos_x".into(), json!(0));
    options.insert("pos_y".into(), json!(0));
    json!({"action": "txt2img", "options": options})
}

/// A photo-like test image: smooth gradients plus deterministic pixel noise, so PNG's
/// filters cannot collapse it the way they would a flat colour (worst realistic case).
fn test_image(size: u32) -> RgbImage {
    let mut state: u32 = 0x9E37_79B9;
    RgbImage::from_fn(size, size, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = state & 0x1F;
        let r = (x * 255 / size + n) as u8;
        let g = (y * 255 / size + n) as u8;
        let b = ((x + y) * 127 / size + n) as u8;
        Rgb([r, g, b])
    })
}

fn assemble_16mb(c: &mut Criterion) {
    // A 16 MB img2img-like message: a large base64 string inside the options.
    let filler = "A".repeat(16 * 1024 * 1024 - 200);
    let msg = json!({"action": "img2img", "options": {"pixels": filler, "img2img_steps": "20"}});
    let wire = frame_message(msg.to_string().as_bytes(), DEFAULT_PACKET_SIZE);
    let mut g = c.benchmark_group("assemble");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.sample_size(20);
    g.bench_function("16MB_request_8KiB_reads", |b| {
        b.iter(|| {
            let mut asm = Assembler::new(DEFAULT_PACKET_SIZE, 64 * 1024 * 1024);
            let mut out = Vec::new();
            for chunk in wire.chunks(READ_CHUNK) {
                asm.push(chunk, &mut out).expect("within limit");
            }
            match out.pop() {
                Some(Frame::Message(m)) => black_box(m.len()),
                other => panic!("expected one message, got {other:?}"),
            }
        })
    });
    g.finish();
}

fn parse_validate(c: &mut Criterion) {
    let bytes = plugin_txt2img(64).to_string().into_bytes();
    let limits = Limits::default();
    c.bench_function("parse_validate_txt2img_64", |b| {
        b.iter(|| {
            let Ok(Request::Generate(raw)) = parse_request(black_box(&bytes)) else {
                panic!("not a generate request");
            };
            let valid = validate_generate(&raw, &limits, &mut || 7).expect("valid");
            black_box(valid.params.steps)
        })
    });
}

fn png_base64(c: &mut Criterion) {
    let mut g = c.benchmark_group("png_base64");
    for size in [64u32, 512] {
        let img = test_image(size);
        g.bench_function(format!("{size}x{size}"), |b| {
            b.iter(|| black_box(encode_png_base64(black_box(&img)).expect("encodes").len()))
        });
    }
    g.finish();
}

fn image_reply(c: &mut Criterion) {
    // Building, serializing (Python style) and framing the image message of a 512x512 image.
    let b64 = encode_png_base64(&test_image(512)).expect("encodes");
    c.bench_function("image_reply_frame_512", |b| {
        b.iter_batched(
            || b64.clone(),
            |s| {
                let v = responses::image(s, "txt2img", &json!(0), &json!(0), "job-1", 1234, None);
                black_box(frame_json(&v, DEFAULT_PACKET_SIZE).len())
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(
    benches,
    assemble_16mb,
    parse_validate,
    png_base64,
    image_reply
);
criterion_main!(benches);
