//! Adapts the model registry (`crate::registry::Registry`: scanning, identification, path
//! confinement) to the `ModelResolver` seam the `ModelRegistryActor` drives. Maps the
//! registry's error kinds onto wire codes; adds no policy of its own.

use crate::messages::registry::{ModelResolver, ResolveError};
use crate::registry::model::ResolvedModel;
use crate::registry::{Registry, ResolveError as RegistryError};

impl ModelResolver for Registry {
    fn resolve(&mut self, requested: &str) -> Result<ResolvedModel, ResolveError> {
        Registry::resolve(self, requested).map_err(to_wire)
    }

    fn list(&mut self) -> Vec<ResolvedModel> {
        Registry::list(self)
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
