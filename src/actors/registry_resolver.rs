//! Adapts the model registry (`crate::registry::Registry`: scanning, identification, path
//! confinement, single-file conversion) to the `ModelResolver` seam the `ModelRegistryActor`
//! drives. Maps the registry's error kinds onto wire codes; adds no policy of its own.

use crate::messages::registry::{ModelResolver, ResolveError};
use crate::registry::convert::convert_single_file;
use crate::registry::model::ResolvedModel;
use crate::registry::{Registry, ResolveError as RegistryError};

impl ModelResolver for Registry {
    fn resolve(&mut self, requested: &str) -> Result<ResolvedModel, ResolveError> {
        Registry::resolve(self, requested).map_err(to_wire)
    }

    fn list(&mut self) -> Vec<ResolvedModel> {
        Registry::list(self)
    }

    fn convert(&mut self, requested: &str) -> Result<ResolvedModel, ResolveError> {
        let (src, dst) = self.convert_paths(requested).map_err(to_wire)?;
        let report = convert_single_file(&src, &dst)
            .map_err(|e| ResolveError::Unavailable(format!("cannot convert {requested}: {e}")))?;
        // Resolving the new folder by its path inside the root identifies it like any model
        // and gives the name clients will use for it.
        let written = report.destination.to_string_lossy().into_owned();
        Registry::resolve(self, &written).map_err(to_wire)
    }

    fn reset(&mut self) {
        Registry::reset(self)
    }
}

fn to_wire(e: RegistryError) -> ResolveError {
    let message = e.to_string();
    match e {
        RegistryError::NotFound(_) => ResolveError::NotFound(message),
        RegistryError::Forbidden(_) => ResolveError::Forbidden(message),
        RegistryError::Unsupported { .. } | RegistryError::Io { .. } => {
            ResolveError::Unavailable(message)
        }
    }
}
