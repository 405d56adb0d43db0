//! The crash soak (`bench/crash_soak.sh`): CYCLES (default 20) `kill -9`s of the warren
//! binary under publishers with confirms and transactions and acking consumers, on two
//! classic and two quorum queues; after each restart, checks that every confirmed message
//! was acknowledged before the crash or is back, once, and that nothing appears that was
//! never published. Prints one row per cycle and the totals; exits 1 on any loss.
//!
//! `cargo run --release --example crash_soak -- [CYCLES] [SEED]`; the broker binary is
//! `WARREN_BIN` (default: `warren` beside this example's directory, i.e.
//! `target/release/warren`).

#[path = "../tests/soak/mod.rs"]
mod soak;

use std::time::Duration;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let cycles = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let seed = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let warren = std::env::var_os("WARREN_BIN")
        .map(Into::into)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.join("warren"))
        })
        .expect("WARREN_BIN or target/release/warren");
    let dir = soak::temp_dir("bench");
    let o = soak::Options {
        warren,
        data_dir: dir.clone(),
        cycles,
        load_min: Duration::from_millis(1000),
        load_max: Duration::from_millis(3000),
        seed,
        extra: vec!["--segment-size".into(), "4194304".into()],
    };
    println!(
        "crash soak: {cycles} cycles, seed {seed}, data dir {}",
        dir.display()
    );
    let report = match soak::run(&o, |i, c| {
        println!(
            "cycle {i}: confirmed {} (tx {}), acked {}, expected back {}, recovered {}, lost {}, phantom {}, duplicate {}",
            c.confirmed, c.tx_committed, c.acked, c.expected, c.recovered, c.lost, c.phantom, c.duplicate
        )
    })
    .await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("crash soak failed to run: {e}");
            soak::remove(&dir);
            std::process::exit(2);
        }
    };
    soak::remove(&dir);
    println!("\n{}", report.table());
    let t = report.total();
    println!(
        "total: {} confirmed ({} in transactions), {} acked, {} expected back, {} recovered ({} confirmed, {} unconfirmed, {} acked and back), lost {}, phantom {}, duplicate {}, not redelivered {}",
        t.confirmed, t.tx_committed, t.acked, t.expected, t.recovered, t.recovered_confirmed,
        t.recovered_unconfirmed, t.reappeared, t.lost, t.phantom, t.duplicate, t.not_redelivered
    );
    if report.ok() {
        println!("verdict: PASS (0 lost, 0 phantom, 0 duplicate)");
    } else {
        println!("verdict: FAIL");
        std::process::exit(1);
    }
}
