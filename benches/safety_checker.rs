//! Cost of the safety check per 512x512 image (preprocessing, vision tower, scores), on the
//! CPU in f32: the tiny fixture checker, and a real-size random CLIP ViT-L/14 checker built
//! from the published config's shape (24 layers, hidden 1024, MLP 4096, 16 heads, patch 14,
//! projection 768; weights from candle's initialisers, so only the time means anything).
//! `cargo bench --bench safety_checker [-- --tiny-only]`; prints one RESULT line per checker.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use image::RgbImage;
use runai::pipeline::safety::config::{Preprocess, VisionConfig};
use runai::pipeline::safety::SafetyChecker;
use serde_json::json;

fn image512() -> RgbImage {
    RgbImage::from_fn(512, 512, |x, y| {
        image::Rgb([(x / 2) as u8, (y / 2) as u8, ((x ^ y) & 0xff) as u8])
    })
}

fn time(name: &str, checker: &SafetyChecker, repeats: usize) {
    let img = image512();
    checker.check(&img).expect("warm-up check");
    let mut ms: Vec<f64> = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            checker.check(&img).expect("check");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "RESULT {}",
        json!({"checker": name, "image": "512x512", "repeats": repeats,
               "median_ms": ms[repeats / 2], "min_ms": ms[0], "max_ms": ms[repeats - 1]})
    );
}

fn main() {
    let device = Device::Cpu;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ext/safety_checker/CompVis/stable-diffusion-safety-checker");
    let tiny = SafetyChecker::load(&dir, &device).expect("tiny checker");
    time("tiny (fixture)", &tiny, 20);
    if std::env::args().any(|a| a == "--tiny-only") {
        return;
    }
    let cfg = VisionConfig::from_json(&json!({
        "projection_dim": 768,
        "vision_config": {"hidden_size": 1024, "intermediate_size": 4096,
                          "num_hidden_layers": 24, "num_attention_heads": 16, "patch_size": 14}
    }))
    .expect("ViT-L/14 config");
    let pre = Preprocess::from_json(&json!({"size": 224, "crop_size": 224})).expect("preprocessor");
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &device);
    let full = SafetyChecker::from_weights(vb, &cfg, pre).expect("ViT-L/14 checker");
    time("ViT-L/14 size (random)", &full, 3);
}
