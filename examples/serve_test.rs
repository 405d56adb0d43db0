//! Starts Warren on a given port (default 5673) for manual experiments.
#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(5673);
    let h = warren::start(warren::Config {
        port,
        ..Default::default()
    })
    .await
    .expect("start");
    println!("listening on {}", h.addr);
    tokio::signal::ctrl_c().await.ok();
    h.shutdown().await;
}
