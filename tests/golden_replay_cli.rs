//! The replay tool end to end: runs one golden case from the manifest, writes the tensors
//! under the golden names, and they match the golden file.

use std::path::Path;

use candle_core::{DType, Device};
use runai::cli::replay::{run, ReplayArgs, OUTPUT_NAMES};

#[test]
fn replay_writes_golden_named_tensors_that_match() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    run(ReplayArgs {
        manifest: root.join("manifest.json"),
        case: "tiny-sd1/img2img_ddim".into(),
        model: None,
        out: out.clone(),
    })
    .unwrap();
    let ours = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let golden = candle_core::safetensors::load(
        root.join("golden/tiny-sd1/img2img_ddim.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for name in OUTPUT_NAMES {
        let a = &ours[*name];
        let b = &golden[*name];
        assert_eq!(a.dtype(), DType::F32);
        assert_eq!(a.dims(), b.dims(), "{name}");
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 5e-3, "{name}: {d}");
    }
    // An unknown case is an error, not a panic.
    let err = run(ReplayArgs {
        manifest: root.join("manifest.json"),
        case: "tiny-sd1/nope".into(),
        model: None,
        out,
    });
    assert!(err.is_err());
}
