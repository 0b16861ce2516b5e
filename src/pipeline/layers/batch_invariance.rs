//! Continuous batching needs every op of the UNet and VAE to compute a sample the same way
//! whatever else shares the call: these tests run each CPU op on one or two samples alone
//! and inside a batch of 8 and compare the bits.

use candle_core::{DType, Tensor};

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// Each op of the UNet and VAE on the CPU: a sample's result alone equals its result inside
/// a batch of 8, bit for bit, at tiny and SD1.5 widths (including the shapes where gemm's own
/// blocking used to depend on the batch: depth > 512 with few rows, a one-row product).
#[test]
fn every_cpu_op_gives_per_sample_results_independent_of_the_batch() {
    use crate::pipeline::kernels::cpu::attention::{attention, geglu};
    use crate::pipeline::layers::conv::Conv2d;
    use crate::pipeline::layers::norm::FusedGroupNorm;
    use candle_core::{Device, Module};
    use candle_nn::Conv2dConfig;

    let dev = Device::Cpu;
    let check = |name: &str, f: &dyn Fn(&Tensor) -> Tensor, x: &Tensor| {
        let all = f(x);
        for b in [1usize, 2] {
            let one = f(&x.narrow(0, 0, b).unwrap());
            assert_eq!(
                bits(&one),
                bits(&all.narrow(0, 0, b).unwrap()),
                "{name}: {b} alone vs in 8"
            );
        }
    };
    let randn = |shape: &[usize], std: f32| Tensor::randn(0f32, std, shape, &dev).unwrap();
    for (cin, cout, hw) in [
        (128usize, 64usize, 8usize),
        (64, 32, 8),
        (320, 320, 8),
        (1280, 1280, 4),
        // Winograd sizes: 16 and up; at 32 the batch of 8 spans several tile chunks.
        (64, 32, 16),
        (320, 320, 32),
    ] {
        let bias = randn(&[cout], 0.1);
        for (k, stride) in [(3, 1), (3, 2), (1, 1)] {
            let cfg = Conv2dConfig {
                padding: k / 2,
                stride,
                ..Default::default()
            };
            let conv =
                Conv2d::new(randn(&[cout, cin, k, k], 0.1), Some(bias.clone()), cfg).unwrap();
            let x = randn(&[8, cin, hw, hw], 1.0);
            check(
                &format!("conv{k} s{stride} {cin}->{cout} at {hw}"),
                &|x| conv.forward(x).unwrap(),
                &x,
            );
            if k == 3 && stride == 1 {
                check(
                    "conv3 upsampled",
                    &|x| conv.forward_upsampled_2x(x).unwrap(),
                    &x,
                );
            }
        }
        let ones = Tensor::ones(cin, DType::F32, &dev).unwrap();
        let zeros = Tensor::zeros(cin, DType::F32, &dev).unwrap();
        let gn = FusedGroupNorm::from_tensors(ones.clone(), zeros.clone(), 32, 1e-5).unwrap();
        check(
            "group norm + silu",
            &|x| gn.forward_silu(x).unwrap(),
            &randn(&[8, cin, hw, hw], 1.0),
        );
        let tokens = randn(&[8, hw * hw, cin], 1.0);
        let ln = candle_nn::LayerNorm::new(ones, zeros, 1e-5);
        check("layer norm", &|x| ln.forward(x).unwrap(), &tokens);
        let lin = crate::pipeline::layers::linear::Linear::new(
            randn(&[cout, cin], 0.1),
            Some(bias.clone()),
        )
        .unwrap();
        check("linear over tokens", &|x| lin.forward(x).unwrap(), &tokens);
        check(
            "geglu",
            &|x| geglu(x).unwrap(),
            &randn(&[8, hw * hw, 2 * cin], 1.0),
        );
        let q = randn(&[8, hw * hw, cout], 1.0);
        check(
            "self-attention",
            &|x| attention(x, x, x, 8, 0.1).unwrap(),
            &q,
        );
        let ctx = randn(&[8, 77, cout], 1.0);
        check(
            "cross-attention",
            &|x| {
                let c = ctx.narrow(0, 0, x.dim(0).unwrap()).unwrap();
                attention(x, &c, &c, 8, 0.1).unwrap()
            },
            &q,
        );
    }
}
