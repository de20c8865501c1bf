//! Subcommands that run Ferry's components.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// Arguments of `ferry apiserver`.
#[derive(Debug, Args)]
pub struct ApiserverArgs {
    /// Directory of the database and the generated kubeconfig.
    #[arg(long, env = "FERRY_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// Address to serve the Kubernetes API on (loopback by default; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
}

/// The default data directory: `$XDG_DATA_HOME/ferry` or `~/.local/share/ferry`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("ferry");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/ferry"),
        None => PathBuf::from(".ferry"),
    }
}

/// Sets up logging (`RUST_LOG`, default `info`) and runs `future` on a multi-threaded runtime.
pub fn run_async(
    future: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    init_logging();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the API server until Ctrl-C.
pub async fn apiserver(args: ApiserverArgs) -> anyhow::Result<()> {
    let mut config = ferry_apiserver::ServerConfig::new(&args.data_dir);
    config.listen = args.listen;
    let server = ferry_apiserver::start(config).await?;
    let kubeconfig = args.data_dir.join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .with_context(|| format!("cannot write {}", kubeconfig.display()))?;
    println!("Ferry API server: {}", server.url());
    println!("kubeconfig:       {}", kubeconfig.display());
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    println!("stopping");
    server.shutdown().await;
    Ok(())
}
