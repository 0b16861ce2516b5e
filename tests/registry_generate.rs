//! Generation from every format through the real `SdGenerator`, resolved by the `Registry`
//! from a seed-layout root: diffusers folders, `.safetensors` and `.ckpt` (SD1 and SD2, the
//! inpainting folder); single files give exactly the folder's images. Also the model cache:
//! switching back to a cached model does not reload it, eviction follows LRU, and memory is
//! given back (RSS over 20 alternating switches with a one-model cache, printed for the record).

mod fixture_common;

use fixture_common::{fixtures, seed_root};
use runai::engine::sd::SdGenerator;
use runai::engine::{GenerateError, GenerateJob, Generator};
use runai::pipeline::params::{GenerateParams, GeneratedImage, SchedulerKind, Task};
use runai::pipeline::RuntimeOptions;
use runai::registry::model::ResolvedModel;
use runai::registry::Registry;

fn params(task: Task) -> GenerateParams {
    GenerateParams {
        task,
        prompt: "a red fox in the snow".into(),
        negative_prompt: "blurry".into(),
        steps: 3,
        guidance_scale: 7.5,
        seed: 7,
        width: Some(64),
        height: Some(64),
        n_samples: 1,
        scheduler: SchedulerKind::Ddim,
        eta: 0.0,
        clip_skip: None,
        timestep_spacing: None,
        xl: Default::default(),
    }
}

fn run(
    generator: &mut SdGenerator,
    model: &ResolvedModel,
    task: Task,
) -> Result<Vec<GeneratedImage>, GenerateError> {
    let job = GenerateJob {
        model: model.clone(),
        params: params(task),
        nsfw_filter: None,
    };
    let mut steps = Vec::new();
    let result = generator.generate(&job, &mut |i, total| {
        steps.push((i, total));
        true
    });
    if result.is_ok() {
        assert_eq!(steps, vec![(0, 3), (1, 3), (2, 3)], "{}", model.name);
    }
    result
}

fn generator(max_models: usize, max_bytes: u64) -> SdGenerator {
    SdGenerator::new(RuntimeOptions::default(), max_models, max_bytes)
}

#[test]
fn every_format_generates_and_single_files_match_their_folder() {
    let root = seed_root();
    let mut reg = Registry::new(&[root.path()]);
    let mut g = generator(8, u64::MAX);
    let mut image = |name: &str| {
        let model = reg.resolve(name).unwrap();
        let images = run(&mut g, &model, Task::Txt2Img).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].image.dimensions(), (64, 64), "{name}");
        images[0].image.clone()
    };
    let sd1 = image("runwayml/stable-diffusion-v1-5");
    assert!(
        sd1 == image("v1/tiny-sd1.safetensors"),
        "sd1 safetensors differs"
    );
    assert!(sd1 == image("v1/tiny-sd1.ckpt"), "sd1 ckpt differs");
    let sd2 = image("stabilityai/stable-diffusion-2-1-base");
    assert!(
        sd2 == image("v2/tiny-sd2.safetensors"),
        "sd2 safetensors differs"
    );
    assert!(sd2 == image("v2/tiny-sd2.ckpt"), "sd2 ckpt differs");
    assert!(sd1 != sd2, "different models gave the same image");

    let inpaint = reg.resolve("runwayml/stable-diffusion-inpainting").unwrap();
    let init = image::open(fixtures().join("inputs/init_64x64.png"))
        .unwrap()
        .to_rgb8();
    let mask = image::open(fixtures().join("inputs/mask_64x64.png"))
        .unwrap()
        .to_luma8();
    let images = run(
        &mut g,
        &inpaint,
        Task::Inpaint {
            init,
            mask: Some(mask),
            strength: 1.0,
        },
    )
    .unwrap();
    assert_eq!(images[0].image.dimensions(), (64, 64));
    assert_eq!(g.load_count(), 7);
    assert_eq!(g.loaded_models().len(), 7);
}

#[test]
fn cached_models_are_not_reloaded_and_eviction_is_lru() {
    let root = seed_root();
    let mut reg = Registry::new(&[root.path()]);
    let a = reg.resolve("v1/tiny-sd1.safetensors").unwrap();
    let b = reg.resolve("v2/tiny-sd2.ckpt").unwrap();
    let c = reg.resolve("runwayml/stable-diffusion-v1-5").unwrap();
    let mut g = generator(2, u64::MAX);
    run(&mut g, &a, Task::Txt2Img).unwrap();
    run(&mut g, &b, Task::Txt2Img).unwrap();
    run(&mut g, &a, Task::Txt2Img).unwrap();
    assert_eq!(
        g.load_count(),
        2,
        "switching back to a cached model reloaded it"
    );
    assert_eq!(g.loaded_models(), vec![a.name.clone(), b.name.clone()]);
    run(&mut g, &c, Task::Txt2Img).unwrap(); // evicts b, the least recently used
    assert_eq!(g.loaded_models(), vec![c.name.clone(), a.name.clone()]);
    run(&mut g, &a, Task::Txt2Img).unwrap();
    assert_eq!(g.load_count(), 3);
    run(&mut g, &b, Task::Txt2Img).unwrap();
    assert_eq!(g.load_count(), 4);
}

#[test]
fn byte_budget_bounds_the_cache() {
    let root = seed_root();
    let mut reg = Registry::new(&[root.path()]);
    let a = reg.resolve("v1/tiny-sd1.safetensors").unwrap();
    let b = reg.resolve("v2/tiny-sd2.safetensors").unwrap();
    // Each tiny model is ~10-15 MB at f32: a 20 MB budget holds only one.
    let mut g = generator(8, 20 << 20);
    run(&mut g, &a, Task::Txt2Img).unwrap();
    run(&mut g, &b, Task::Txt2Img).unwrap();
    assert_eq!(g.loaded_models(), vec![b.name.clone()]);
    run(&mut g, &a, Task::Txt2Img).unwrap();
    assert_eq!(g.load_count(), 3);
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn evicted_models_give_their_memory_back() {
    let root = seed_root();
    let mut reg = Registry::new(&[root.path()]);
    let a = reg.resolve("v1/tiny-sd1.ckpt").unwrap();
    let b = reg
        .resolve("stabilityai/stable-diffusion-2-1-base")
        .unwrap();
    let mut g = generator(1, u64::MAX);
    let mut rss = Vec::new();
    for i in 0..20 {
        let model = if i % 2 == 0 { &a } else { &b };
        run(&mut g, model, Task::Txt2Img).unwrap();
        rss.push(rss_bytes());
    }
    assert_eq!(g.load_count(), 20);
    let mib: Vec<String> = rss
        .iter()
        .map(|b| format!("{:.1}", *b as f64 / 1048576.0))
        .collect();
    println!("RSS (MiB) after each of 20 alternating switches, one-model cache: {mib:?}");
    // Each model holds ~10-15 MB of weights. Were evicted models leaked, 16 more loads would
    // add well over 100 MB; allow allocator noise only.
    let growth = rss[19].saturating_sub(rss[3]);
    assert!(
        growth < 40 << 20,
        "RSS grew by {} MiB over 16 switches",
        growth >> 20
    );
}

#[test]
fn cancelling_stops_the_job() {
    let root = seed_root();
    let mut reg = Registry::new(&[root.path()]);
    let model = reg.resolve("v2/tiny-sd2.safetensors").unwrap();
    let mut g = generator(1, u64::MAX);
    let job = GenerateJob {
        model,
        params: params(Task::Txt2Img),
        nsfw_filter: None,
    };
    let mut calls = 0;
    let result = g.generate(&job, &mut |_, _| {
        calls += 1;
        false
    });
    assert!(
        matches!(result, Err(GenerateError::Cancelled)),
        "{result:?}"
    );
    assert_eq!(calls, 1);
}

#[test]
fn a_broken_model_is_a_load_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.safetensors");
    std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}         ").unwrap();
    let model = ResolvedModel {
        name: "broken.safetensors".into(),
        path,
        version: runai::registry::model::ModelVersion::V1,
        kind: runai::registry::model::ModelKind::Txt2Img,
        format: runai::registry::model::ModelFormat::Safetensors,
        prediction: runai::registry::model::Prediction::Epsilon,
    };
    let mut g = generator(1, u64::MAX);
    assert!(matches!(
        run(&mut g, &model, Task::Txt2Img),
        Err(GenerateError::ModelLoad(_))
    ));
    assert!(g.loaded_models().is_empty());
}
