//! End-to-end tests: real `vigil` processes, real HTTP on loopback, real files.

mod bad_input;
mod cli;
mod demo;
mod harness;
mod mqtt_crash;
mod sync;
