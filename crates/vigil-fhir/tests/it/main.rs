//! vigil-fhir tests: one per mapping, and validation of every resource kind by `fhir.resources`.

mod examples;
mod mapping;
mod validate;
