//! AUTOMATIC1111's sampler and schedule-type names mapped onto runai's schedulers. A1111
//! names a sampler ("DPM++ 2M") and, since 1.9, a separate schedule type ("Karras"); older
//! clients send the combined name ("DPM++ 2M Karras"). An unknown name or an unavailable
//! combination falls back (to the default sampler, or the sampler's own schedule) with a
//! warning for `info`, as clients expect, never a refusal. Pure lookups.

use crate::pipeline::params::SchedulerKind;

/// What runai runs when a request names no sampler, or one it does not know.
pub(crate) const DEFAULT_SAMPLER: &str = "Euler a";

/// A1111 sampler names runai can run, with their aliases (as `/samplers` lists them) and
/// the scheduler each runs with the automatic schedule.
pub(crate) const SAMPLERS: &[(&str, &[&str], SchedulerKind)] = &[
    (
        "Euler a",
        &["k_euler_a", "k_euler_ancestral"],
        SchedulerKind::EulerAncestral,
    ),
    ("Euler", &["k_euler"], SchedulerKind::Euler),
    ("LMS", &["k_lms"], SchedulerKind::Lms),
    ("Heun", &["k_heun"], SchedulerKind::Heun),
    ("DPM++ 2M", &["k_dpmpp_2m"], SchedulerKind::DpmPp2m),
    ("DDIM", &["ddim"], SchedulerKind::Ddim),
    ("PLMS", &["plms"], SchedulerKind::Pndm),
    ("UniPC", &["unipc"], SchedulerKind::UniPc),
    ("DDPM", &["ddpm"], SchedulerKind::Ddpm),
];

/// Schedule types runai has: (name, label). "karras" exists for DPM++ 2M only.
pub(crate) const SCHEDULE_TYPES: &[(&str, &str)] =
    &[("automatic", "Automatic"), ("karras", "Karras")];

/// A request's sampler and schedule resolved to a runai scheduler, with the names to report
/// (infotext, `info`) and any fallback warning.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SamplerChoice {
    pub(crate) kind: SchedulerKind,
    pub(crate) sampler: &'static str,
    pub(crate) schedule: &'static str,
    pub(crate) warnings: Vec<String>,
}

fn find_sampler(name: &str) -> Option<(&'static str, SchedulerKind)> {
    let n = name.trim();
    SAMPLERS
        .iter()
        .find(|(s, aliases, _)| {
            s.eq_ignore_ascii_case(n) || aliases.iter().any(|a| a.eq_ignore_ascii_case(n))
        })
        .map(|(s, _, k)| (*s, *k))
}

/// Resolves `sampler` (A1111 name, alias or legacy combined name; `None` = default) and
/// `schedule` (a schedule type's name or label; `None`/"" = automatic).
pub(crate) fn choose(sampler: Option<&str>, schedule: Option<&str>) -> SamplerChoice {
    let mut warnings = Vec::new();
    let requested = sampler.map(str::trim).filter(|s| !s.is_empty());
    let mut karras = false;
    let found = match requested {
        None => find_sampler(DEFAULT_SAMPLER),
        Some(name) => find_sampler(name).or_else(|| {
            // Legacy combined names: "<sampler> Karras".
            let base = name
                .strip_suffix(" Karras")
                .or_else(|| name.strip_suffix(" karras"))?;
            karras = true;
            find_sampler(base)
        }),
    };
    let (name, kind) = match found {
        Some(f) => f,
        None => {
            warnings.push(format!(
                "unknown sampler {:?}; used {DEFAULT_SAMPLER} (see /sdapi/v1/samplers)",
                requested.unwrap_or_default()
            ));
            karras = false;
            find_sampler(DEFAULT_SAMPLER).unwrap_or(("Euler a", SchedulerKind::EulerAncestral))
        }
    };
    match schedule.map(str::trim).filter(|s| !s.is_empty()) {
        None => {}
        Some(s) if s.eq_ignore_ascii_case("automatic") => {}
        Some(s) if s.eq_ignore_ascii_case("karras") => karras = true,
        Some(s) => warnings.push(format!(
            "unknown schedule type {s:?}; used Automatic (see /sdapi/v1/schedulers)"
        )),
    }
    if karras && kind != SchedulerKind::DpmPp2m {
        warnings.push(format!(
            "the Karras schedule is available for DPM++ 2M only; {name} used Automatic"
        ));
        karras = false;
    }
    let (kind, schedule) = if karras {
        (SchedulerKind::DpmPp2mKarras, "Karras")
    } else {
        (kind, "Automatic")
    };
    SamplerChoice {
        kind,
        sampler: name,
        schedule,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_combined_names() {
        assert_eq!(
            choose(Some("Euler a"), None).kind,
            SchedulerKind::EulerAncestral
        );
        assert_eq!(choose(Some("k_lms"), None).kind, SchedulerKind::Lms);
        assert_eq!(choose(Some("dpm++ 2m"), None).kind, SchedulerKind::DpmPp2m);
        let c = choose(Some("DPM++ 2M Karras"), None);
        assert_eq!(
            (c.kind, c.sampler, c.schedule),
            (SchedulerKind::DpmPp2mKarras, "DPM++ 2M", "Karras")
        );
        assert!(c.warnings.is_empty());
        let split = choose(Some("DPM++ 2M"), Some("Karras"));
        assert_eq!(split.kind, SchedulerKind::DpmPp2mKarras);
        assert_eq!(choose(None, None).kind, SchedulerKind::EulerAncestral);
        assert_eq!(
            choose(Some("PLMS"), Some("automatic")).kind,
            SchedulerKind::Pndm
        );
    }

    #[test]
    fn unknown_names_fall_back_with_a_warning() {
        let c = choose(Some("DPM++ 3M SDE Exponential"), None);
        assert_eq!(c.kind, SchedulerKind::EulerAncestral);
        assert!(
            c.warnings[0].contains("DPM++ 3M SDE Exponential"),
            "{:?}",
            c.warnings
        );
        let k = choose(Some("Euler"), Some("Karras"));
        assert_eq!(k.kind, SchedulerKind::Euler);
        assert!(k.warnings[0].contains("Karras"));
        let s = choose(Some("Euler"), Some("beta"));
        assert_eq!(s.kind, SchedulerKind::Euler);
        assert!(s.warnings[0].contains("beta"));
    }
}
