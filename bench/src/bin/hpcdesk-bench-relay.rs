//! `hpcdesk-bench-relay --map LISTEN=TARGET …`: the plain TCP relay the gateway benchmark
//! compares hpcdesk with (tokio's `copy_bidirectional_with_sizes` per connection).
//!
//! A binary of its own so that it keeps Rust's default allocator: the benchmark binary (and
//! the hpcdesk server it runs) uses mimalloc, under which this relay's untouched 64 KiB buffers
//! would count as resident memory and make the baseline look worse than a plain relay is.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut maps = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--map" => maps.push(args.next().ok_or("--map LISTEN=TARGET")?),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let mut addrs = Vec::new();
    for m in maps {
        let (listen, target) = m.split_once('=').ok_or("--map LISTEN=TARGET")?;
        let l = TcpListener::bind(listen).await?;
        addrs.push(l.local_addr()?.to_string());
        let target: SocketAddr = target.parse()?;
        tokio::spawn(async move {
            while let Ok((mut a, _)) = l.accept().await {
                tokio::spawn(async move {
                    let _ = a.set_nodelay(true);
                    if let Ok(mut b) = TcpStream::connect(target).await {
                        let _ = b.set_nodelay(true);
                        // 64 KiB buffers both ways, like the gateway's: the strongest
                        // plain relay tokio offers.
                        let _ = tokio::io::copy_bidirectional_with_sizes(
                            &mut a,
                            &mut b,
                            64 * 1024,
                            64 * 1024,
                        )
                        .await;
                    }
                });
            }
        });
    }
    println!("ready {}", addrs.join(" "));
    std::future::pending::<()>().await;
    Ok(())
}
