//! End-to-end tests: real `vigil` processes, real HTTP on loopback, real files.

mod access;
mod alerts;
mod api_fuzz;
mod audit;
mod bad_input;
mod cli;
mod demo;
mod edge;
mod ehr_push;
mod encryption;
mod fhir;
mod fhir_client;
mod fhir_resources;
mod harness;
mod log_privacy;
mod login;
mod mqtt_crash;
#[cfg(feature = "oidc")]
mod oidc;
mod privacy;
mod scenarios;
mod sync;
mod tls;
