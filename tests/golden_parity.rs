//! Acceptance: every public golden case replayed end to end with its recorded noise (the
//! supplied inputs) must match the reference within the tolerances (the f32 limits of
//! `runai parity`, which runs the same check on any device).

use std::path::Path;

use runai::cli::parity::check_manifest;
use runai::pipeline::RuntimeOptions;

#[test]
fn all_public_cases_match_golden() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifest.json");
    let reports = check_manifest(&manifest, "", &RuntimeOptions::default()).unwrap();
    assert!(reports.len() >= 25, "expected the 25 public cases");
    let mut failures = Vec::new();
    for r in &reports {
        let diffs: Vec<String> = r
            .diffs
            .iter()
            .map(|(n, d, _)| format!("{n} {d:.2e}"))
            .collect();
        println!("{}: {} png {}", r.id, diffs.join(" "), r.png_levels);
        failures.extend(r.failures.iter().cloned());
    }
    assert!(failures.is_empty(), "parity failures: {failures:#?}");
}
