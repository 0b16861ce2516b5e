//! Continuous batching on the tiny fixture model: a job's final latents and images are
//! bit-identical whether it runs alone (the whole-job path, one image per UNet call) or
//! shares its UNet calls with other users' jobs of other schedulers, step counts, guidance
//! scales, tasks and sample counts, joining and leaving at step boundaries, with text
//! encoding and VAE decode batched as well.

mod fixture_common;

use fixture_common::fixtures;

use candle_core::{DType, Tensor};
use image::RgbImage;
use runai::pipeline::denoise::Denoising;
use runai::pipeline::noise::SeededNoise;
use runai::pipeline::params::{GenerateParams, PromptSyntax, SchedulerKind, Task};
use runai::pipeline::trace::Trace;
use runai::pipeline::{RuntimeOptions, StableDiffusion};

fn model() -> StableDiffusion {
    StableDiffusion::load_folder(
        &fixtures().join("models/tiny-sd1"),
        &RuntimeOptions::default(),
    )
    .unwrap()
}

fn params(scheduler: SchedulerKind, steps: usize, guidance: f64, seed: u64) -> GenerateParams {
    GenerateParams {
        task: Task::Txt2Img,
        prompt: format!("a fox number {seed}"),
        negative_prompt: "blurry".into(),
        steps,
        guidance_scale: guidance,
        seed,
        width: None,
        height: None,
        n_samples: 1,
        scheduler,
        eta: 0.0,
        clip_skip: None,
        syntax: Default::default(),
        loras: Vec::new(),
        timestep_spacing: None,
        xl: Default::default(),
    }
}

/// Five users' jobs: other schedulers, step counts, guidance, an img2img, two samples, and an
/// A1111 prompt of two 75-token chunks against a one-chunk negative, not padded (its uncond
/// and cond rows attend to contexts of different lengths: one UNet call per length).
fn jobs() -> Vec<GenerateParams> {
    let init = image::open(fixtures().join("inputs/init_64x64.png"))
        .unwrap()
        .to_rgb8();
    vec![
        params(SchedulerKind::Ddim, 6, 7.5, 1),
        GenerateParams {
            n_samples: 2,
            ..params(SchedulerKind::EulerAncestral, 4, 5.0, 2)
        },
        params(SchedulerKind::DpmPp2mKarras, 5, 1.0, 3),
        GenerateParams {
            task: Task::Img2Img {
                init,
                strength: 0.7,
            },
            ..params(SchedulerKind::Euler, 7, 3.0, 4)
        },
        GenerateParams {
            prompt: format!("(a red fox:1.2), {}", "snowy forest ".repeat(60)),
            syntax: PromptSyntax::A1111 {
                pad_cond_uncond: false,
            },
            ..params(SchedulerKind::Ddim, 5, 6.0, 5)
        },
    ]
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// The whole-job path: final latents and images.
fn alone(m: &StableDiffusion, p: &GenerateParams) -> (Vec<u32>, Vec<RgbImage>) {
    let mut trace = Trace::new();
    let mut noise = SeededNoise::new(p.seed, p.n_samples);
    let images = m
        .run_with_noise(p, &mut noise, Some(&mut trace), &mut |_, _| true)
        .unwrap();
    let latents = bits(trace.get("final_latents").unwrap());
    (latents, images.into_iter().map(|g| g.image).collect())
}

struct Running {
    index: usize,
    job: Denoising,
    noise: SeededNoise,
}

/// One shared step for every running job, then each job's own scheduler step.
fn step(m: &StableDiffusion, batch: &mut [Running]) {
    let states: Vec<&Denoising> = batch.iter().map(|r| &r.job).collect();
    let preds = m.predict_batch(&states).unwrap();
    for (r, pred) in batch.iter_mut().zip(preds) {
        r.job.advance(&pred, &mut r.noise).unwrap();
    }
}

#[test]
fn a_job_is_bit_identical_alone_and_mixed_with_other_users_jobs() {
    let m = model();
    let all = jobs();
    let expected: Vec<_> = all.iter().map(|p| alone(&m, p)).collect();

    let start = |indices: &[usize]| -> Vec<Running> {
        let ps: Vec<&GenerateParams> = indices.iter().map(|&i| &all[i]).collect();
        m.start_batch(&ps)
            .into_iter()
            .zip(indices)
            .map(|(r, &index)| {
                let (job, noise) = r.unwrap();
                Running { index, job, noise }
            })
            .collect()
    };
    let mut finished: Vec<Option<(Vec<u32>, Vec<RgbImage>)>> = vec![None; all.len()];
    // Job 0 runs alone for two steps; then the other four join together (one text-encoder
    // call for the literal prompts) mid-run; members retire as they finish, decoded together when they finish
    // together.
    let mut batch = start(&[0]);
    step(&m, &mut batch);
    step(&m, &mut batch);
    assert_eq!(batch[0].job.steps_done(), 2);
    batch.extend(start(&[1, 2, 3, 4]));
    let mut max_members = 0;
    while !batch.is_empty() {
        max_members = max_members.max(batch.len());
        step(&m, &mut batch);
        let (done, rest): (Vec<Running>, Vec<Running>) =
            batch.into_iter().partition(|r| r.job.is_done());
        batch = rest;
        if done.is_empty() {
            continue;
        }
        let states: Vec<&Denoising> = done.iter().map(|r| &r.job).collect();
        let images = m.decode_batch(&states).unwrap();
        for (r, imgs) in done.iter().zip(images) {
            let imgs = imgs.into_iter().map(|g| g.image).collect();
            finished[r.index] = Some((bits(r.job.latents()), imgs));
        }
    }
    assert_eq!(max_members, 5, "all five jobs shared steps");
    let long = &batch_contexts(&m, &all[4]);
    assert_ne!(
        long.0, long.1,
        "job 4's uncond and cond contexts differ in length"
    );
    for (i, (want, got)) in expected.iter().zip(&finished).enumerate() {
        let got = got.as_ref().expect("every job finished");
        assert_eq!(want.0.len(), got.0.len(), "job {i}: latent size");
        let differing = want.0.iter().zip(&got.0).filter(|(a, b)| a != b).count();
        assert_eq!(
            differing, 0,
            "job {i}: final latents differ in {differing} values"
        );
        assert_eq!(want.1.len(), got.1.len(), "job {i}: image count");
        for (a, b) in want.1.iter().zip(&got.1) {
            assert_eq!(a.as_raw(), b.as_raw(), "job {i}: images differ");
        }
    }
}

#[test]
fn a_unet_row_does_not_depend_on_the_rows_beside_it() {
    let m = model();
    let dev = candle_core::Device::Cpu;
    let rows: Vec<Tensor> = ["one", "two", "three", "four", "five"]
        .iter()
        .map(|p| m.encode_prompt(p, None).unwrap())
        .collect();
    let ctx = Tensor::cat(&rows, 0).unwrap();
    let xs = Tensor::randn(0f32, 1.0, (5, 4, 8, 8), &dev).unwrap();
    let ts = [999.0, 1.0, 500.5, 250.0, 42.0];
    let all = m.unet_forward_per_sample(&xs, &ts, &ctx).unwrap();
    for i in 0..5 {
        let one = m
            .unet_forward_per_sample(
                &xs.narrow(0, i, 1).unwrap(),
                &ts[i..i + 1],
                &ctx.narrow(0, i, 1).unwrap(),
            )
            .unwrap();
        assert_eq!(
            bits(&one),
            bits(&all.narrow(0, i, 1).unwrap()),
            "row {i} alone vs in a batch of 5"
        );
    }
}

/// Token lengths of a job's uncond and cond contexts (as the trace records them).
fn batch_contexts(m: &StableDiffusion, p: &GenerateParams) -> (usize, usize) {
    let mut trace = Trace::new();
    let mut noise = SeededNoise::new(p.seed, p.n_samples);
    m.run_with_noise(p, &mut noise, Some(&mut trace), &mut |_, _| true)
        .unwrap();
    let len = |name: &str| trace.get(name).unwrap().dim(1).unwrap();
    (len("uncond_prompt_embeds"), len("prompt_embeds"))
}
