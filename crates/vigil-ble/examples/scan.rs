//! Scans for BLE health devices and prints what the session hands to the sink (counts and
//! codes only, no values). `cargo run -p vigil-ble --features live --example scan`.
//! Exits with code 1 and one line when there is no Bluetooth stack or adapter.

use vigil_ble::live::{LiveConfig, Sink, SinkError, SinkItem, run};

#[derive(Debug)]
struct Print;

impl Sink for Print {
    async fn accept(&mut self, item: &SinkItem) -> Result<(), SinkError> {
        match item {
            SinkItem::Records {
                address, records, ..
            } => println!("{address}: {} record(s)", records.len()),
            SinkItem::Rejected(r) => println!("{}: rejected ({})", r.address, r.code()),
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(LiveConfig::default(), Print).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
