//! [`SilentProxy`]: a loopback TCP proxy to a unix socket whose connections can be made
//! to go silent (bytes dropped both ways, sockets left open), as a connection does when
//! a NAT or firewall forgets it: no FIN, no RST, just nothing.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// One proxied connection: its silence flag and its client socket (shut down on drop).
#[derive(Debug)]
struct Link {
    silent: Arc<AtomicBool>,
    client: TcpStream,
    server: UnixStream,
}

/// A proxy from `127.0.0.1:<port>` to a unix socket. Connections it accepts later are
/// forwarded normally, whatever happened to earlier ones. Stops on drop.
#[derive(Debug)]
pub struct SilentProxy {
    port: u16,
    links: Arc<Mutex<Vec<Link>>>,
    stop: Arc<AtomicBool>,
}

impl SilentProxy {
    /// Listens on a free loopback port and forwards each connection to `target`.
    pub fn start(target: &Path) -> SilentProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy on 127.0.0.1:0");
        let port = listener.local_addr().expect("proxy address").port();
        let links: Arc<Mutex<Vec<Link>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let target: PathBuf = target.to_owned();
        {
            let links = links.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = UnixStream::connect(&target) else {
                        continue;
                    };
                    let silent = Arc::new(AtomicBool::new(false));
                    let (Ok(c2), Ok(s2), Ok(keep_c), Ok(keep_s)) = (
                        client.try_clone(),
                        server.try_clone(),
                        client.try_clone(),
                        server.try_clone(),
                    ) else {
                        continue;
                    };
                    pump(client, server, silent.clone());
                    pump(s2, c2, silent.clone());
                    if let Ok(mut l) = links.lock() {
                        l.push(Link {
                            silent,
                            client: keep_c,
                            server: keep_s,
                        });
                    }
                }
            });
        }
        SilentProxy { port, links, stop }
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Every connection accepted so far goes silent: what either side sends is dropped,
    /// nothing is closed.
    pub fn silence_existing(&self) {
        for link in self.links.lock().expect("proxy links").iter() {
            link.silent.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Ok(links) = self.links.lock() {
            for link in links.iter() {
                let _ = link.client.shutdown(Shutdown::Both);
                let _ = link.server.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Copies `from` to `to` on a thread of its own until either side ends; drops the bytes
/// once `silent` is set.
fn pump(
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
    silent: Arc<AtomicBool>,
) {
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if silent.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
}
