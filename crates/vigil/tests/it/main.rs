//! End-to-end tests: real `vigil` processes, real HTTP on loopback, real files.

mod access;
mod alerts;
mod bad_input;
mod cli;
mod demo;
mod edge;
mod encryption;
mod fhir;
mod harness;
mod mqtt_crash;
mod scenarios;
mod sync;
