//! Seeded host noise: reproducible, one stream per image (row i of a batch draw equals a solo
//! draw with seed + i), standard-normal statistics, and shape mismatches are errors.

use candle_core::{Device, Tensor};
use runai::pipeline::noise::{NoiseSource, SeededNoise};

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn same_seed_same_draws_and_rows_follow_their_own_seed() {
    let dev = Device::Cpu;
    let mut batch = SeededNoise::new(u64::MAX, 3);
    let first = batch.randn(&[3, 4, 5, 6], &dev).unwrap();
    let second = batch.randn(&[3, 4, 5, 6], &dev).unwrap();
    for i in 0..3u64 {
        // seed + i wraps around u64::MAX.
        let mut solo = SeededNoise::new(u64::MAX.wrapping_add(i), 1);
        let a = solo.randn(&[1, 4, 5, 6], &dev).unwrap();
        let b = solo.randn(&[1, 4, 5, 6], &dev).unwrap();
        assert_eq!(values(&first.narrow(0, i as usize, 1).unwrap()), values(&a));
        assert_eq!(
            values(&second.narrow(0, i as usize, 1).unwrap()),
            values(&b)
        );
    }
    let mut again = SeededNoise::new(u64::MAX, 3);
    assert_eq!(
        values(&again.randn(&[3, 4, 5, 6], &dev).unwrap()),
        values(&first)
    );
    assert_ne!(values(&first), values(&second));
}

#[test]
fn draws_look_standard_normal() {
    let mut noise = SeededNoise::new(7, 1);
    let v = values(&noise.randn(&[1, 4, 128, 128], &Device::Cpu).unwrap());
    let n = v.len() as f64;
    let mean = v.iter().map(|x| f64::from(*x)).sum::<f64>() / n;
    let var = v
        .iter()
        .map(|x| (f64::from(*x) - mean).powi(2))
        .sum::<f64>()
        / n;
    assert!(mean.abs() < 0.02, "mean {mean}");
    assert!((var - 1.0).abs() < 0.03, "variance {var}");
}

#[test]
fn batch_size_mismatch_is_an_error() {
    let mut noise = SeededNoise::new(1, 2);
    assert!(noise.randn(&[3, 4, 8, 8], &Device::Cpu).is_err());
    // The initial latents default to an ordinary draw.
    let t = noise.initial_latents(&[2, 4, 8, 8], &Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[2, 4, 8, 8]);
}
