//! `warren-ctl`: manage users, vhosts, permissions, limits and definitions of a running
//! Warren (or RabbitMQ) through its management HTTP API. See `warren::ctl`.

use clap::Parser;

/// Manage a running Warren (or RabbitMQ) through its management HTTP API.
#[derive(Debug, Parser)]
#[command(name = "warren-ctl", version, about)]
struct Cli {
    /// Management API base URL.
    #[arg(long, env = "WARREN_CTL_URL", default_value = "http://127.0.0.1:15672")]
    url: String,
    /// User for HTTP basic authentication (needs the administrator tag).
    #[arg(long, short = 'u', env = "WARREN_CTL_USER", default_value = "guest")]
    user: String,
    /// Password for HTTP basic authentication.
    #[arg(long, env = "WARREN_CTL_PASSWORD", default_value = "guest")]
    password: String,
    #[command(subcommand)]
    command: warren::ctl::Command,
}

fn main() {
    let cli = Cli::parse();
    let ep = match warren::ctl::http::Endpoint::parse(&cli.url, &cli.user, &cli.password) {
        Ok(ep) => ep,
        Err(e) => {
            eprintln!("warren-ctl: {e}");
            std::process::exit(2);
        }
    };
    let stdout = std::io::stdout();
    if let Err(e) = warren::ctl::run(&ep, &cli.command, &mut stdout.lock()) {
        match &e {
            warren::ctl::CtlError::Http(warren::ctl::http::HttpError::Status { body, .. }) => {
                eprintln!("warren-ctl: {e}: {body}")
            }
            _ => eprintln!("warren-ctl: {e}"),
        }
        std::process::exit(1);
    }
}
