//! End-to-end tests: real `vigil` processes, real HTTP on loopback, real files.

mod access;
mod alerts;
mod api_fuzz;
mod bad_input;
mod cli;
mod demo;
mod edge;
mod ehr_push;
mod encryption;
mod fhir;
mod harness;
mod log_privacy;
mod mqtt_crash;
mod scenarios;
mod sync;
