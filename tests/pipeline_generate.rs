//! Behaviour of the generator on the tiny fixture models: determinism, per-image seeds in a
//! batch, size validation, non-square sizes, every task, cancellation, guidance and clip_skip.

mod fixture_common;

use fixture_common::fixtures;

use candle_core::{DType, Tensor};
use image::{GrayImage, RgbImage};
use runai::pipeline::noise::SeededNoise;
use runai::pipeline::params::{GenerateParams, SchedulerKind, Task};
use runai::pipeline::trace::Trace;
use runai::pipeline::{PipelineError, RuntimeOptions, StableDiffusion};

fn model(name: &str) -> StableDiffusion {
    StableDiffusion::load_folder(
        &fixtures().join("models").join(name),
        &RuntimeOptions::default(),
    )
    .unwrap()
}

fn init_image() -> RgbImage {
    image::open(fixtures().join("inputs/init_64x64.png"))
        .unwrap()
        .to_rgb8()
}

fn mask_image() -> GrayImage {
    image::open(fixtures().join("inputs/mask_64x64.png"))
        .unwrap()
        .to_luma8()
}

fn params(task: Task) -> GenerateParams {
    GenerateParams {
        task,
        prompt: "a red fox in the snow".into(),
        negative_prompt: "blurry".into(),
        steps: 3,
        guidance_scale: 7.5,
        seed: 42,
        width: None,
        height: None,
        n_samples: 1,
        scheduler: SchedulerKind::Ddim,
        eta: 0.0,
        clip_skip: None,
        timestep_spacing: None,
        xl: Default::default(),
    }
}

fn run(m: &StableDiffusion, p: &GenerateParams) -> Vec<RgbImage> {
    m.generate(p, &mut |_, _| true)
        .unwrap()
        .into_iter()
        .map(|g| g.image)
        .collect()
}

fn traced(m: &StableDiffusion, p: &GenerateParams) -> Trace {
    let mut trace = Trace::new();
    let mut noise = SeededNoise::new(p.seed, p.n_samples);
    m.run_with_noise(p, &mut noise, Some(&mut trace), &mut |_, _| true)
        .unwrap();
    trace
}

#[test]
fn same_seed_is_bit_identical_and_seeds_differ() {
    let m = model("tiny-sd1");
    let p = params(Task::Txt2Img);
    let a = run(&m, &p);
    let b = run(&m, &p);
    assert_eq!(a[0].as_raw(), b[0].as_raw());
    assert_eq!(
        (a[0].width(), a[0].height()),
        (64, 64),
        "native size is 8 * sample_size"
    );
    let other = run(&m, &GenerateParams { seed: 43, ..p });
    assert_ne!(a[0].as_raw(), other[0].as_raw());
}

#[test]
fn batch_image_i_equals_solo_run_with_seed_plus_i() {
    let m = model("tiny-sd1");
    for (task, scheduler) in [
        (Task::Txt2Img, SchedulerKind::EulerAncestral),
        (
            Task::Img2Img {
                init: init_image(),
                strength: 0.7,
            },
            SchedulerKind::Euler,
        ),
    ] {
        let p = GenerateParams {
            n_samples: 3,
            seed: 10,
            scheduler,
            ..params(task)
        };
        let batch = m.generate(&p, &mut |_, _| true).unwrap();
        assert_eq!(batch.len(), 3);
        for (i, g) in batch.iter().enumerate() {
            assert_eq!(g.seed, 10 + i as u64);
            let solo = run(
                &m,
                &GenerateParams {
                    n_samples: 1,
                    seed: 10 + i as u64,
                    ..p.clone()
                },
            );
            let worst = g
                .image
                .as_raw()
                .iter()
                .zip(solo[0].as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert_eq!(
                worst, 0,
                "image {i} ({scheduler:?}) differs from its solo run"
            );
        }
        assert_ne!(batch[0].image.as_raw(), batch[1].image.as_raw());
    }
}

#[test]
fn sizes_must_be_multiples_of_eight() {
    let m = model("tiny-sd1");
    for (w, h) in [(60, 64), (64, 0), (0, 64), (65, 72)] {
        let p = GenerateParams {
            width: Some(w),
            height: Some(h),
            ..params(Task::Txt2Img)
        };
        let err = m.generate(&p, &mut |_, _| true).unwrap_err();
        assert!(
            matches!(err, PipelineError::InvalidRequest(_)),
            "{w}x{h}: {err}"
        );
    }
    // An init image that does not match the requested size is refused, not resized.
    let p = GenerateParams {
        width: Some(32),
        height: Some(32),
        ..params(Task::Img2Img {
            init: init_image(),
            strength: 0.5,
        })
    };
    assert!(matches!(
        m.generate(&p, &mut |_, _| true),
        Err(PipelineError::InvalidRequest(_))
    ));
}

#[test]
fn non_square_sizes_including_odd_latent_sizes() {
    let m = model("tiny-sd2");
    for (w, h) in [(96, 48), (72, 40)] {
        let p = GenerateParams {
            width: Some(w),
            height: Some(h),
            scheduler: SchedulerKind::Euler,
            ..params(Task::Txt2Img)
        };
        let img = &run(&m, &p)[0];
        assert_eq!((img.width(), img.height()), (w, h));
    }
}

#[test]
fn img2img_runs_only_the_strength_fraction() {
    let m = model("tiny-sd1");
    let mut calls = Vec::new();
    let p = GenerateParams {
        steps: 10,
        ..params(Task::Img2Img {
            init: init_image(),
            strength: 0.35,
        })
    };
    let out = m
        .generate(&p, &mut |i, n| {
            calls.push((i, n));
            true
        })
        .unwrap();
    assert_eq!(out[0].image.dimensions(), (64, 64));
    // int(10 * 0.35) = 3 denoising steps, each reported once it is done.
    assert_eq!(calls, vec![(0, 3), (1, 3), (2, 3)]);
    let none = GenerateParams {
        steps: 2,
        ..params(Task::Img2Img {
            init: init_image(),
            strength: 0.2,
        })
    };
    assert!(matches!(
        m.generate(&none, &mut |_, _| true),
        Err(PipelineError::InvalidRequest(_))
    ));
}

#[test]
fn inpaint_with_nine_channel_unet_and_without_mask() {
    let m = model("tiny-inpaint");
    for mask in [Some(mask_image()), None] {
        let p = params(Task::Inpaint {
            init: init_image(),
            mask,
            strength: 1.0,
        });
        let t = traced(&m, &p);
        assert_eq!(t.get("unet_out_0").unwrap().dims(), &[2, 4, 8, 8]);
        assert!(t.get("masked_image_latents").is_some());
        assert_eq!(t.get("image").unwrap().dims(), &[1, 3, 64, 64]);
    }
}

#[test]
fn inpaint_with_four_channel_unet_keeps_the_unmasked_latents() {
    let m = model("tiny-sd1");
    for strength in [1.0, 0.6] {
        let p = params(Task::Inpaint {
            init: init_image(),
            mask: Some(mask_image()),
            strength,
        });
        let t = traced(&m, &p);
        let mask = t.get("mask_latent").unwrap();
        let keep = (1.0 - mask).unwrap();
        let known = t.get("image_latents").unwrap();
        let fin = t.get("final_latents").unwrap();
        // Outside the mask the last blend puts the clean image latents back exactly.
        let diff = (fin.broadcast_mul(&keep).unwrap() - known.broadcast_mul(&keep).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
        // Inside the mask the result was denoised, not copied.
        let inside = (fin.broadcast_mul(mask).unwrap() - known.broadcast_mul(mask).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(inside > 0.0);
        let sum_mask = mask.sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(sum_mask > 0.0 && sum_mask < 64.0, "fixture mask is partial");
    }
}

#[test]
fn cancel_stops_before_the_next_unet_call() {
    let m = model("tiny-sd1");
    let mut seen = Vec::new();
    let err = m
        .generate(&params(Task::Txt2Img), &mut |i, n| {
            seen.push((i, n));
            i < 1
        })
        .unwrap_err();
    assert!(matches!(err, PipelineError::Cancelled));
    // Step 0 ran, step 1 ran and was answered with false: no third UNet call.
    assert_eq!(seen, vec![(0, 3), (1, 3)]);
    // Cancelling after the last step still cancels (no decode, no images).
    let err = m
        .generate(&params(Task::Txt2Img), &mut |i, n| i + 1 < n)
        .unwrap_err();
    assert!(matches!(err, PipelineError::Cancelled));
}

/// Records every report and stops at the `stop_at`-th call of `proceed` (1-based).
struct StopBetweenPhases {
    stop_at: usize,
    proceeds: usize,
    steps: usize,
}

impl runai::pipeline::Progress for StopBetweenPhases {
    fn step(&mut self, _step: usize, _total: usize) -> bool {
        self.steps += 1;
        true
    }

    fn proceed(&mut self) -> bool {
        self.proceeds += 1;
        self.proceeds < self.stop_at
    }
}

#[test]
fn cancel_is_observed_between_every_expensive_phase() {
    let m = model("tiny-sd1");
    let p = GenerateParams {
        n_samples: 2,
        ..params(Task::Txt2Img)
    };
    // Phases: text encoding | initial latents | 3 steps | decode image 0 | decode image 1.
    let mut all = StopBetweenPhases {
        stop_at: usize::MAX,
        proceeds: 0,
        steps: 0,
    };
    assert_eq!(m.generate(&p, &mut all).unwrap().len(), 2);
    assert_eq!((all.proceeds, all.steps), (4, 3));
    for (stop_at, steps_run) in [(1, 0), (2, 0), (3, 3), (4, 3)] {
        let mut progress = StopBetweenPhases {
            stop_at,
            proceeds: 0,
            steps: 0,
        };
        let err = m.generate(&p, &mut progress).unwrap_err();
        assert!(matches!(err, PipelineError::Cancelled), "{err}");
        assert_eq!(progress.proceeds, stop_at, "nothing runs after a stop");
        assert_eq!(progress.steps, steps_run, "stop at proceed {stop_at}");
    }
}

#[test]
fn an_inpainting_model_refuses_other_tasks_before_running() {
    let m = model("tiny-inpaint");
    for task in [
        Task::Txt2Img,
        Task::Img2Img {
            init: init_image(),
            strength: 0.5,
        },
    ] {
        let mut steps = 0;
        let err = m
            .generate(&params(task), &mut |_, _| {
                steps += 1;
                true
            })
            .unwrap_err();
        match err {
            PipelineError::InvalidRequest(msg) => assert!(msg.contains("inpaint"), "{msg}"),
            other => panic!("expected an invalid request, got {other}"),
        }
        assert_eq!(steps, 0);
    }
}

#[test]
fn guidance_at_most_one_skips_the_unconditional_pass() {
    let m = model("tiny-sd1");
    let p = GenerateParams {
        guidance_scale: 1.0,
        n_samples: 2,
        ..params(Task::Txt2Img)
    };
    let t = traced(&m, &p);
    assert!(t.get("negative_prompt_embeds").is_none());
    assert_eq!(t.get("unet_out_0").unwrap().dims()[0], 2);
    let cfg = traced(
        &m,
        &GenerateParams {
            guidance_scale: 3.0,
            ..p
        },
    );
    assert_eq!(cfg.get("unet_out_0").unwrap().dims()[0], 4);
}

#[test]
fn clip_skip_uses_an_earlier_layer() {
    let m = model("tiny-sd1");
    let last = m.encode_prompt("a red fox", None).unwrap();
    let zero = m.encode_prompt("a red fox", Some(0)).unwrap();
    let skip = m.encode_prompt("a red fox", Some(1)).unwrap();
    let same = (&last - &zero).unwrap().abs().unwrap().sum_all().unwrap();
    assert_eq!(same.to_scalar::<f32>().unwrap(), 0.0);
    let moved = (&last - &skip).unwrap().abs().unwrap().sum_all().unwrap();
    assert!(moved.to_scalar::<f32>().unwrap() > 0.0);
    // The fixture encoder has 2 layers: skipping 2 leaves nothing.
    assert!(matches!(
        m.encode_prompt("a red fox", Some(2)),
        Err(PipelineError::InvalidRequest(_))
    ));
}

#[test]
fn half_precision_runs() {
    let opts = RuntimeOptions {
        dtype: DType::F16,
        ..RuntimeOptions::default()
    };
    let m = StableDiffusion::load_folder(&fixtures().join("models/tiny-sd1"), &opts).unwrap();
    let img = &run(&m, &params(Task::Txt2Img))[0];
    assert_eq!(img.dimensions(), (64, 64));
    let f32_img = &run(&model("tiny-sd1"), &params(Task::Txt2Img))[0];
    let mean_diff: f64 = img
        .as_raw()
        .iter()
        .zip(f32_img.as_raw())
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
        .sum::<f64>()
        / img.as_raw().len() as f64;
    assert!(mean_diff < 8.0, "f16 drifted: mean |diff| {mean_diff}");
    let _ = Tensor::zeros(1, DType::F32, &candle_core::Device::Cpu);
}
