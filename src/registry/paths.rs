//! Confines model paths sent by clients to the configured model roots, lexically, before
//! anything is opened: `..` anywhere, absolute paths outside every root, empty names and NUL
//! bytes are refused. Links that an administrator placed inside a root are followed later (they
//! are trusted); this module never touches the file system except to canonicalize the roots.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    /// The path would leave the model roots (wire code `forbidden_path`).
    #[error("model path {0:?} is outside the model roots")]
    Forbidden(String),
}

/// A model root as configured, in two spellings: lexically normalized and canonical, so a
/// client may name a model under either (e.g. when the root itself is a symlink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Root {
    pub(crate) lexical: PathBuf,
    pub(crate) canonical: Option<PathBuf>,
}

impl Root {
    pub(crate) fn new(path: &Path) -> Self {
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(path))
                .unwrap_or_else(|_| path.to_path_buf())
        };
        // Roots come from the administrator: `..` in them is allowed and resolved lexically.
        let mut lexical = PathBuf::new();
        for c in absolute.components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir => {
                    lexical.pop();
                }
                other => lexical.push(other.as_os_str()),
            }
        }
        let canonical = std::fs::canonicalize(&lexical).ok();
        Root { lexical, canonical }
    }
}

/// A requested path after confinement: inside `roots[root]`, at `path`, named `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) root: usize,
    /// Root (as configured, lexical form) joined with the relative part.
    pub(crate) path: PathBuf,
    /// The part relative to the root, `/`-separated: the model's display name.
    pub(crate) name: String,
}

/// Splits a client path into its normal components, refusing `..`, NUL and empty names.
fn normal_parts(requested: &str) -> Result<(bool, Vec<OsString>), PathError> {
    let forbidden = || PathError::Forbidden(requested.to_string());
    if requested.is_empty() || requested.contains('\0') {
        return Err(forbidden());
    }
    let path = Path::new(requested);
    let mut parts = Vec::new();
    let mut absolute = false;
    for c in path.components() {
        match c {
            Component::RootDir => absolute = true,
            Component::CurDir => {}
            Component::Normal(p) => parts.push(p.to_os_string()),
            // `..` is refused outright, even when it would stay inside a root: no client
            // needs it, and refusing it leaves no room for mistakes.
            Component::ParentDir | Component::Prefix(_) => return Err(forbidden()),
        }
    }
    Ok((absolute, parts))
}

fn join_name(parts: &[OsString]) -> String {
    parts
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Where a client path may point, in root order. An absolute path must lie under a root; a
/// relative one is tried under every root. The result is never empty.
pub(crate) fn confine(requested: &str, roots: &[Root]) -> Result<Vec<Candidate>, PathError> {
    let forbidden = || PathError::Forbidden(requested.to_string());
    let (absolute, parts) = normal_parts(requested)?;
    let mut out = Vec::new();
    if absolute {
        let full: PathBuf = std::iter::once(OsString::from("/"))
            .chain(parts.iter().cloned())
            .collect();
        for (i, root) in roots.iter().enumerate() {
            let spellings = std::iter::once(&root.lexical).chain(root.canonical.as_ref());
            for base in spellings {
                if let Ok(rel) = full.strip_prefix(base) {
                    let rel_parts: Vec<OsString> = rel
                        .components()
                        .map(|c| c.as_os_str().to_os_string())
                        .collect();
                    if rel_parts.is_empty() {
                        // The root itself is not a model.
                        continue;
                    }
                    out.push(Candidate {
                        root: i,
                        path: root.lexical.join(rel),
                        name: join_name(&rel_parts),
                    });
                    break;
                }
            }
        }
    } else {
        if parts.is_empty() {
            return Err(forbidden());
        }
        let rel: PathBuf = parts.iter().collect();
        for (i, root) in roots.iter().enumerate() {
            out.push(Candidate {
                root: i,
                path: root.lexical.join(&rel),
                name: join_name(&parts),
            });
        }
    }
    if out.is_empty() {
        return Err(forbidden());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> Vec<Root> {
        vec![
            Root {
                lexical: PathBuf::from("/models/sd"),
                canonical: Some(PathBuf::from("/data/sd")),
            },
            Root {
                lexical: PathBuf::from("/srv/a1111/models/Stable-diffusion"),
                canonical: None,
            },
        ]
    }

    #[test]
    fn relative_names_are_tried_under_every_root() {
        let c = confine("v1/model.ckpt", &roots()).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].path, PathBuf::from("/models/sd/v1/model.ckpt"));
        assert_eq!(c[0].name, "v1/model.ckpt");
        assert_eq!(
            c[1].path,
            PathBuf::from("/srv/a1111/models/Stable-diffusion/v1/model.ckpt")
        );
    }

    #[test]
    fn absolute_paths_under_a_root_keep_their_relative_name() {
        let c = confine("/models/sd/runwayml/stable-diffusion-v1-5/", &roots()).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].name, "runwayml/stable-diffusion-v1-5");
        let c = confine("/data/sd/./v2/x.safetensors", &roots()).unwrap();
        assert_eq!(c[0].path, PathBuf::from("/models/sd/v2/x.safetensors"));
    }

    #[test]
    fn every_escape_is_forbidden() {
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "v1/../../etc/passwd",
            "v1/../v2/model.ckpt",
            "/etc/passwd",
            "/models/sdx/model.ckpt",
            "/models/sd",
            "/models/sd/../other/model.ckpt",
            "/models/sd/v1/../../../etc/shadow",
            "v1/model\0.ckpt",
            "/",
        ] {
            assert!(
                matches!(confine(bad, &roots()), Err(PathError::Forbidden(_))),
                "{bad:?} was not refused"
            );
        }
    }

    #[test]
    fn roots_are_normalized_lexically() {
        let r = Root::new(Path::new("/models/./sd/../sd2"));
        assert_eq!(r.lexical, PathBuf::from("/models/sd2"));
    }

    proptest::proptest! {
        /// Whatever a client sends, every candidate lies under a root and never contains `..`.
        #[test]
        fn candidates_never_leave_the_roots(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("..".to_string()),
                    proptest::strategy::Just(".".to_string()),
                    proptest::strategy::Just("".to_string()),
                    proptest::strategy::Just("models".to_string()),
                    proptest::strategy::Just("sd".to_string()),
                    "[a-z.\\\\:]{1,6}",
                ],
                0..8,
            ),
            absolute in proptest::bool::ANY,
        ) {
            let joined = parts.join("/");
            let requested = if absolute { format!("/{joined}") } else { joined };
            if let Ok(cands) = confine(&requested, &roots()) {
                for c in cands {
                    let root = &roots()[c.root].lexical;
                    proptest::prop_assert!(c.path.starts_with(root));
                    proptest::prop_assert!(c.path != *root);
                    proptest::prop_assert!(!c
                        .path
                        .components()
                        .any(|x| matches!(x, Component::ParentDir)));
                }
            }
        }
    }
}
