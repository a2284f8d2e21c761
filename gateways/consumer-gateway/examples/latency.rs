//! Measures GetTrack latency with the full mask against a running consumer gateway, one call
//! at a time: `cargo run --release -p consumer-gateway --example latency -- [URL] [CALLS]`.
//! The tracks cycle through the seed dataset's public, unrestricted ones. The benchmark suite
//! (`just bench`) is the fuller measurement; this is the quick look.

use std::time::{Duration, Instant};

use authorization::token::mint_development_token;
use protos::consumer::v1::{GetTrackRequest, consumer_gateway_client::ConsumerGatewayClient};
use tonic::{Request, metadata::MetadataValue};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let calls: usize = args.next().map_or(Ok(2000), |n| n.parse())?;
    let mut client = ConsumerGatewayClient::connect(url).await?;
    // Many listeners, so that the per-user rate limit is not what is measured.
    let headers = (800..1000)
        .map(|n| {
            MetadataValue::try_from(format!(
                "Bearer {}",
                mint_development_token(Some(&format!("usr_{n:04}")), "US", 3600)
            ))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Public tracks playable everywhere: n % 10 != 3 and n % 20 not 7 or 11.
    let ids: Vec<String> = (1..=1000u32)
        .filter(|n| n % 10 != 3 && n % 20 != 7 && n % 20 != 11)
        .map(|n| format!("trk_{n:05}"))
        .collect();
    let mut samples = Vec::with_capacity(calls);
    for i in 0..calls + 200 {
        let mut request = Request::new(GetTrackRequest {
            track_id: ids[i % ids.len()].clone(),
            read_mask: None,
            secret_token: None,
        });
        request
            .metadata_mut()
            .insert("authorization", headers[i % headers.len()].clone());
        let started = Instant::now();
        client.get_track(request).await?;
        if i >= 200 {
            samples.push(started.elapsed());
        }
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "GetTrack, full mask, {} sequential calls: p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        samples.len(),
        micros(at(0.50)),
        micros(at(0.90)),
        micros(at(0.99)),
        micros(samples[samples.len() - 1]),
    );
    Ok(())
}
