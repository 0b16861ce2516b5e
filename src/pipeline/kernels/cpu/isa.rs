//! Which instruction set our CPU kernels run on, chosen once per process at run time.
//!
//! A binary built for any x86-64 machine carries three copies of the hot loops (gemm's
//! microkernels and our vectorised math): portable, AVX2+FMA and AVX-512. `Auto` runs the
//! widest copy the CPU has. That is a measured choice, not an assumption: Zen 4 (AMD family
//! 25) executes 512-bit instructions on 256-bit units, yet the AVX-512 gemm microkernels (larger
//! register tiles, half the instructions) ran the UNet faster there too (BENCHMARKS.md, "CPU
//! kernels by machine"); Zen 5 and Intel's AVX-512 cores have full-width units. The CPU model
//! is logged at start and written into every benchmark row, and the administrator can force a
//! copy (`cpu_kernels = "avx2"`), e.g. to measure a new machine.
//! On a CPU without AVX2 (or another architecture) the portable loops run and gemm keeps its
//! own choice (NEON on ARM).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// One copy of the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Plain Rust loops, any CPU.
    Portable,
    /// 256-bit AVX2 with fused multiply-add.
    Avx2Fma,
    /// 512-bit AVX-512 (F, BW, CD, DQ, VL: what gemm's and our AVX-512 copies use).
    Avx512,
}

impl Isa {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2Fma => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can execute the copy.
    pub(crate) fn runs_here(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2Fma.runs_here()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512cd")
                    && is_x86_feature_detected!("avx512dq")
                    && is_x86_feature_detected!("avx512vl")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The copies this CPU can run, portable first (tests compare them).
    #[cfg(test)]
    pub(crate) fn all_here() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2Fma, Isa::Avx512]
            .into_iter()
            .filter(|i| i.runs_here())
            .collect()
    }
}

/// What the administrator asked for (`cpu_kernels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Preference {
    /// The widest copy this CPU runs ([`auto_choice`]).
    #[default]
    Auto,
    /// Exactly this copy; refused if the CPU cannot run it.
    Force(Isa),
}

impl Preference {
    /// `auto`, `avx512` or `avx2`.
    pub(crate) fn parse(s: &str) -> Option<Preference> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Preference::Auto,
            "avx512" => Preference::Force(Isa::Avx512),
            "avx2" => Preference::Force(Isa::Avx2Fma),
            _ => return None,
        })
    }

    pub(crate) const NAMES: &'static str = "auto, avx512, avx2";
}

/// The processor as CPUID describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CpuModel {
    /// "AuthenticAMD", "GenuineIntel", ... ("" where CPUID is not available).
    pub(crate) vendor: String,
    /// Display family and model (extended fields folded in, as /proc/cpuinfo prints them).
    pub(crate) family: u32,
    pub(crate) model: u32,
    /// The brand string, e.g. "AMD EPYC 9R14 96-Core Processor" (a VM may shorten it).
    pub(crate) name: String,
}

impl CpuModel {
    /// One line for logs and benchmark rows.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} ({} family {} model {})",
            if self.name.is_empty() {
                "unknown CPU"
            } else {
                &self.name
            },
            if self.vendor.is_empty() {
                "?"
            } else {
                &self.vendor
            },
            self.family,
            self.model
        )
    }
}

/// This machine's processor, read once.
pub(crate) fn cpu_model() -> &'static CpuModel {
    static MODEL: OnceLock<CpuModel> = OnceLock::new();
    MODEL.get_or_init(read_cpu_model)
}

#[cfg(target_arch = "x86_64")]
// `__cpuid` is a safe function from Rust 1.87 on and `unsafe` before (rust-version is 1.80).
#[allow(unused_unsafe)]
fn read_cpu_model() -> CpuModel {
    use std::arch::x86_64::__cpuid;
    // SAFETY: CPUID exists on every x86-64 processor; leaves above the maximum reported by
    // leaf 0 (standard) or 0x80000000 (extended) are not queried.
    let leaf0 = unsafe { __cpuid(0) };
    let vendor: Vec<u8> = [leaf0.ebx, leaf0.edx, leaf0.ecx]
        .iter()
        .flat_map(|r| r.to_le_bytes())
        .collect();
    let (family, model) = if leaf0.eax >= 1 {
        // SAFETY: leaf 1 is within the maximum standard leaf (checked above).
        let eax = unsafe { __cpuid(1) }.eax;
        display_family_model(eax)
    } else {
        (0, 0)
    };
    // SAFETY: as above; 0x80000000 reports the highest extended leaf.
    let max_ext = unsafe { __cpuid(0x8000_0000) }.eax;
    let mut name = Vec::new();
    if max_ext >= 0x8000_0004 {
        for leaf in 0x8000_0002u32..=0x8000_0004 {
            // SAFETY: the brand-string leaves are within the maximum extended leaf.
            let r = unsafe { __cpuid(leaf) };
            for reg in [r.eax, r.ebx, r.ecx, r.edx] {
                name.extend_from_slice(&reg.to_le_bytes());
            }
        }
    }
    let text = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_string()
    };
    CpuModel {
        vendor: text(&vendor),
        family,
        model,
        name: text(&name),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn read_cpu_model() -> CpuModel {
    CpuModel {
        vendor: String::new(),
        family: 0,
        model: 0,
        name: String::new(),
    }
}

/// Family and model from CPUID leaf 1's EAX, extended fields folded in as Intel and AMD
/// document (the extended family adds only when the base family is 15; the extended model
/// counts for base families 6 and 15).
fn display_family_model(eax: u32) -> (u32, u32) {
    let base_family = (eax >> 8) & 0xf;
    let base_model = (eax >> 4) & 0xf;
    let family = if base_family == 0xf {
        base_family + ((eax >> 20) & 0xff)
    } else {
        base_family
    };
    let model = if base_family == 0x6 || base_family == 0xf {
        (((eax >> 16) & 0xf) << 4) | base_model
    } else {
        base_model
    };
    (family, model)
}

/// What `Auto` picks, given which copies `runs` on this CPU: the widest.
pub(crate) fn auto_choice(runs: impl Fn(Isa) -> bool) -> Isa {
    [Isa::Avx512, Isa::Avx2Fma]
        .into_iter()
        .find(|&i| runs(i))
        .unwrap_or(Isa::Portable)
}

/// 0 = not chosen yet, else 1 + index into `CHOICES`.
static ACTIVE: AtomicU8 = AtomicU8::new(0);
const CHOICES: [Isa; 3] = [Isa::Portable, Isa::Avx2Fma, Isa::Avx512];

/// Sets the copy every kernel uses from now on; call before the first model runs (a later
/// call switches the kernels of later ops). Refuses a copy this CPU cannot run.
pub(crate) fn configure(pref: Preference) -> Result<Isa, String> {
    let isa = match pref {
        Preference::Auto => auto_choice(Isa::runs_here),
        Preference::Force(isa) if isa.runs_here() => isa,
        Preference::Force(isa) => {
            return Err(format!(
                "cpu_kernels = {}: this CPU ({}) cannot run it",
                isa.name(),
                cpu_model().describe()
            ))
        }
    };
    let index = CHOICES.iter().position(|&c| c == isa).unwrap_or(0);
    ACTIVE.store(index as u8 + 1, Ordering::Relaxed);
    Ok(isa)
}

/// The copy in use: the configured one, or `Auto`'s choice if nothing was configured.
pub(crate) fn active() -> Isa {
    match ACTIVE.load(Ordering::Relaxed) {
        0 => configure(Preference::Auto).unwrap_or(Isa::Portable),
        n => CHOICES[usize::from(n - 1)],
    }
}

/// [`active`]'s name, for logs and benchmark rows.
pub(crate) fn active_name() -> &'static str {
    active().name()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_and_model_fold_the_extended_fields() {
        // Zen 4 EPYC: family 0xF + ext 0xA = 25, model 0x11 = 17 (ext 1, base 1).
        assert_eq!(display_family_model(0x00A1_0F11), (25, 17));
        // Zen 5: family 0xF + 0xB = 26.
        assert_eq!(display_family_model(0x00B0_0F20), (26, 2));
        // Intel Sapphire Rapids: family 6, model 0x8F.
        assert_eq!(display_family_model(0x0008_06F8), (6, 0x8f));
    }

    #[test]
    fn auto_takes_the_widest_copy_the_cpu_runs() {
        assert_eq!(auto_choice(|_| true), Isa::Avx512);
        assert_eq!(auto_choice(|i| i != Isa::Avx512), Isa::Avx2Fma);
        assert_eq!(auto_choice(|i| i == Isa::Portable), Isa::Portable);
        assert!(auto_choice(Isa::runs_here).runs_here());
    }

    #[test]
    fn preferences_parse_and_unknown_names_do_not() {
        assert_eq!(
            Preference::parse(" AVX512 "),
            Some(Preference::Force(Isa::Avx512))
        );
        assert_eq!(Preference::parse("auto"), Some(Preference::Auto));
        assert_eq!(
            Preference::parse("avx2"),
            Some(Preference::Force(Isa::Avx2Fma))
        );
        assert_eq!(Preference::parse("sse"), None);
    }

    #[test]
    fn this_machine_is_described() {
        let m = cpu_model();
        #[cfg(target_arch = "x86_64")]
        assert!(!m.vendor.is_empty() && m.family > 0, "{m:?}");
        assert!(!m.describe().is_empty());
        assert!(Isa::Portable.runs_here());
    }
}
