//! The `kube-sim` binary: a Kubernetes API server double on loopback.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// kube-sim — a Kubernetes API server double for jitsh's tests and dev mode.
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API over HTTPS until SIGTERM or SIGINT.
    Serve {
        /// Address to listen on (loopback).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Where to write the kubeconfig (contexts admin, gateway and one per fixture user).
        #[arg(long)]
        kubeconfig_out: PathBuf,
        /// `demo`, or a fixture YAML file.
        #[arg(long, default_value = "demo")]
        fixture: String,
        /// Write the Kubernetes audit log (JSON lines) here.
        #[arg(long)]
        audit_log: Option<PathBuf>,
        /// Where container filesystems and logs live (default: a temporary directory).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Container sandbox: auto, bubblewrap or none.
        #[arg(long, default_value = "auto")]
        sandbox: kube_sim::runtime::SandboxMode,
    },
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // Built-in container images re-exec this binary (see kube_sim::runtime).
    if args.get(1).map(String::as_str) == Some(kube_sim::runtime::CONTAINER_SUBCOMMAND) {
        return kube_sim::runtime::container_main(args);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Serve {
        listen,
        kubeconfig_out,
        fixture,
        audit_log,
        state_dir,
        sandbox,
    } = cli.command;
    let fixture = if fixture == "demo" {
        kube_sim::Fixture::Demo
    } else {
        kube_sim::Fixture::File(PathBuf::from(fixture))
    };
    let mut builder = kube_sim::SimBuilder::new()
        .fixture(fixture)
        .listen(listen)
        .sandbox(sandbox);
    if let Some(p) = audit_log {
        builder = builder.audit_log(p);
    }
    if let Some(d) = state_dir {
        builder = builder.state_dir(d);
    }
    let sim = builder.start().await.context("starting")?;
    sim.write_kubeconfig(&kubeconfig_out)?;
    println!("kube-sim listening on https://{}", sim.addr());
    println!("kubeconfig written to {}", kubeconfig_out.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    sim.shutdown().await;
    Ok(())
}
