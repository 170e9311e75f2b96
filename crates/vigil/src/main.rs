//! `vigil`: the one binary. Subcommands run the demo, the hub, the gateway, the simulator,
//! benchmarks, NEWS2 scoring and administration.

mod audit;
mod backup;
mod bench;
mod bench_fhir;
mod clients;
mod config;
mod decode;
mod demo;
mod news2;
mod pki;
mod run;
mod sim;
mod users;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    version,
    about = "Vigil: remote patient monitoring from device to clinician"
)]
struct Cli {
    /// TOML configuration file (environment variables VIGIL_SECTION__KEY override it).
    #[arg(long, global = true, env = "VIGIL_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter (tracing syntax), e.g. `info`, `vigil_gateway=debug`.
    #[arg(long, global = true, env = "VIGIL_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Hub, gateway and simulated patients on embedded storage, in one process.
    Demo(demo::DemoArgs),
    /// Run the hub.
    Hub(run::HubArgs),
    /// Run a gateway.
    Gateway(run::GatewayArgs),
    /// Simulate patients (or a load) and send their readings to a gateway.
    Sim(sim::SimArgs),
    /// Measure throughput, storage cost and memory.
    Bench(bench::BenchArgs),
    /// Decode one device payload and print its canonical readings as JSON.
    Decode(decode::DecodeArgs),
    /// Compute a NEWS2 score (Royal College of Physicians, 2017) and print it as JSON.
    News2(news2::News2Args),
    /// Administration: credentials for people, services and gateways.
    Admin {
        #[command(subcommand)]
        cmd: run::AdminCmd,
    },
    /// The tamper-evident audit log of access to patient data: verify, export.
    Audit {
        #[command(subcommand)]
        cmd: audit::AuditCmd,
    },
}

/// An error in what the user gave (arguments, input data): exit code 2.
#[derive(Debug)]
pub struct InputError(pub String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: logs redirected to files or collectors stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

fn main() -> ExitCode {
    vigil_tls::install_default_provider();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::from(2);
            }
            // One line: clap's first line, without its usage block.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {first} (see vigil --help)");
            return ExitCode::from(2);
        }
    };
    init_logging(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.cmd {
            Cmd::Demo(a) => demo::run(a, cli.config.as_deref()).await,
            Cmd::Hub(a) => run::hub(a, cli.config.as_deref()).await,
            Cmd::Gateway(a) => run::gateway(a, cli.config.as_deref()).await,
            Cmd::Sim(a) => sim::run(a).await,
            Cmd::Bench(a) => bench::run(a).await,
            Cmd::News2(a) => news2::run(a),
            Cmd::Decode(a) => decode::run(a),
            Cmd::Admin { cmd } => run::admin(cmd, cli.config.as_deref()).await,
            Cmd::Audit { cmd } => audit::run(cmd, cli.config.as_deref()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {line}");
            if e.downcast_ref::<InputError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Parses durations such as `90s`, `10m`, `1h30m`, `2d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    vigil_sim::parse_duration(s).map_err(|e| e.to_string())
}
